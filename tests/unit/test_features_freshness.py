"""FeatureFreshnessSensor / FeatureFreshnessTrigger logic, and the pure helpers of chunked materialization."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from airflow.sdk.exceptions import AirflowSensorTimeout, TaskDeferred

from mlops_provider.exceptions import FeatureStoreError
from mlops_provider.sensors.feast import FeatureFreshnessSensor, FeatureFreshnessTimeout
from mlops_provider.triggers.feast import FeatureFreshnessTrigger

TARGET = "2013-03-01T00:00:00+00:00"
KWARGS = {
    "repo_path": "/repo",
    "target_time": TARGET,
    "feature_service": "flights_delay_v1",
    "feature_views": ["a", "b"],
    "feast_conn_id": "feast_prod",
    "poll_interval": 5.0,
    "deadline": "2013-03-01T06:00:00+00:00",
}


def _report(fresh: bool) -> dict:
    views = {
        "a": {"materialized_until": TARGET, "behind_seconds": 0.0, "fresh": True},
        "b": {"materialized_until": None if not fresh else TARGET, "behind_seconds": None if not fresh else 0.0,
              "fresh": fresh},
        "c": {"materialized_until": "2013-02-27T12:00:00+00:00", "behind_seconds": 129600.0, "fresh": fresh},
    }
    if fresh:
        views["c"] = {"materialized_until": TARGET, "behind_seconds": 0.0, "fresh": True}
    stale = sorted(n for n, v in views.items() if not v["fresh"])
    return {"target": TARGET, "fresh": not stale, "stale": stale, "views": views}


class ScriptedTrigger(FeatureFreshnessTrigger):
    """The real trigger loop with the registry read replaced by a script of reports / exceptions."""

    def __init__(self, script: list, **kw) -> None:
        super().__init__(**kw)
        self.script = list(script)
        self.calls = 0

    def check(self) -> dict:
        self.calls += 1
        item = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(item, Exception):
            raise item
        return item


async def _events(trigger, limit: int = 5) -> list[dict]:
    out = []
    async for ev in trigger.run():
        out.append(ev.payload)
        if len(out) >= limit:
            break
    return out


# --- trigger -----------------------------------------------------------------------------------------


def test_trigger_serialize_round_trip_exact_kwargs():
    trigger = FeatureFreshnessTrigger(**KWARGS)
    path, kwargs = trigger.serialize()
    assert path == "mlops_provider.triggers.feast.FeatureFreshnessTrigger"
    assert kwargs == KWARGS
    module, _, name = path.rpartition(".")
    cls = getattr(__import__(module, fromlist=[name]), name)
    again = cls(**kwargs)
    assert again.serialize() == (path, KWARGS)


def test_trigger_yields_success_after_polling():
    trigger = ScriptedTrigger([_report(False), _report(False), _report(True)], **{**KWARGS, "poll_interval": 0.0,
                                                                               "deadline": None})
    events = asyncio.run(_events(trigger))
    assert events == [{"status": "success", "report": _report(True)}]
    assert trigger.calls == 3


def test_trigger_times_out_with_the_stale_report():
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    trigger = ScriptedTrigger([_report(False)], **{**KWARGS, "deadline": past})
    events = asyncio.run(_events(trigger))
    assert len(events) == 1
    assert events[0]["status"] == "timeout"
    assert events[0]["report"]["stale"] == ["b", "c"]


@pytest.mark.parametrize("exc", [FeatureStoreError("registry gone"), ValueError("bad"), KeyError("fresh")])
def test_trigger_turns_every_exception_into_one_error_event(exc):
    trigger = ScriptedTrigger([_report(False), exc], **{**KWARGS, "poll_interval": 0.0, "deadline": None})
    events = asyncio.run(_events(trigger))
    assert len(events) == 1
    assert events[0]["status"] == "error"
    assert events[0]["error_type"] == type(exc).__name__
    assert str(exc) in events[0]["message"] or exc.args[0] in events[0]["message"]


def test_trigger_bad_deadline_and_missing_repo_are_error_events(tmp_path, monkeypatch):
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    bad = FeatureFreshnessTrigger(**{**KWARGS, "deadline": "not a time"})
    assert asyncio.run(_events(bad))[0]["status"] == "error"
    # the real registry read (Feast in a thread) on a repo that does not exist
    missing = FeatureFreshnessTrigger(**{**KWARGS, "repo_path": str(tmp_path / "nope"), "deadline": None})
    (event,) = asyncio.run(_events(missing))
    assert event["status"] == "error" and event["error_type"] == "FeatureStoreError"
    assert "does not exist" in event["message"]


# --- sensor ------------------------------------------------------------------------------------------


class ScriptedSensor(FeatureFreshnessSensor):
    def __init__(self, *, reports: list, **kw) -> None:
        super().__init__(**kw)
        self.reports = list(reports)

    def _check(self, target: str) -> dict:
        self.seen_target = target
        return self.reports.pop(0) if len(self.reports) > 1 else self.reports[0]


def _sensor(cls=FeatureFreshnessSensor, reports=None, **kw):
    kw = {"task_id": "fresh", "repo_path": "/repo", "feature_service": "flights_delay_v1", **kw}
    return cls(reports=reports, **kw) if reports is not None else cls(**kw)


def test_execute_complete_success_returns_report():
    assert _sensor().execute_complete({}, {"status": "success", "report": _report(True)}) == _report(True)


def test_execute_complete_timeout_names_stale_views_and_lag():
    with pytest.raises(FeatureFreshnessTimeout) as err:
        _sensor(timeout=600).execute_complete({}, {"status": "timeout", "report": _report(False)})
    msg = str(err.value)
    assert "b (never materialized)" in msg
    assert "c (materialized until 2013-02-27T12:00:00+00:00, 1 day, 12:00:00 behind)" in msg
    assert "'flights_delay_v1'" in msg and "timed out after 600 s" in msg
    assert "a (" not in msg
    assert isinstance(err.value, FeatureStoreError) and isinstance(err.value, AirflowSensorTimeout)
    assert err.value.report["stale"] == ["b", "c"]


def test_execute_complete_error_raises_named_error():
    with pytest.raises(FeatureStoreError, match="in the triggerer: ValueError: registry gone"):
        _sensor().execute_complete({}, {"status": "error", "error_type": "ValueError", "message": "registry gone"})
    with pytest.raises(FeatureStoreError):
        _sensor().execute_complete({}, None)


def test_deferrable_defers_with_exact_trigger_kwargs_when_stale():
    sensor = _sensor(ScriptedSensor, [_report(False)], deferrable=True, timeout=3600, poke_interval=30,
                     feast_conn_id="feast_prod")
    before = datetime.now(UTC)
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute({"data_interval_end": datetime(2013, 3, 1, tzinfo=UTC)})
    assert sensor.seen_target == TARGET
    trigger = deferred.value.trigger
    assert isinstance(trigger, FeatureFreshnessTrigger)
    _, kwargs = trigger.serialize()
    deadline = datetime.fromisoformat(kwargs.pop("deadline"))
    assert kwargs == {"repo_path": "/repo", "target_time": TARGET, "feature_service": "flights_delay_v1",
                      "feature_views": None, "feast_conn_id": "feast_prod", "poll_interval": 30.0}
    assert before + timedelta(seconds=3600) <= deadline <= datetime.now(UTC) + timedelta(seconds=3600)
    assert deferred.value.method_name == "execute_complete"
    assert deferred.value.timeout > timedelta(seconds=3600)  # safety net behind the trigger's own deadline


def test_deferrable_returns_at_once_when_fresh():
    sensor = _sensor(ScriptedSensor, [_report(True)], deferrable=True, target_time=TARGET)
    assert sensor.execute({}) == _report(True)


def test_poke_mode_succeeds_after_stale_pokes_and_times_out_with_names():
    ok = _sensor(ScriptedSensor, [_report(False), _report(True)], target_time=TARGET, poke_interval=0.01, timeout=30)
    assert ok.execute({}) == _report(True)
    stale = _sensor(ScriptedSensor, [_report(False)], target_time=TARGET, poke_interval=0.01, timeout=0.05)
    with pytest.raises(FeatureFreshnessTimeout, match=r"stale view\(s\): b \(never materialized\), c"):
        stale.execute({})


def test_missing_target_raises_named_error():
    with pytest.raises(FeatureStoreError, match="no target_time"):
        _sensor(ScriptedSensor, [_report(True)]).execute({})


def test_sensor_has_no_io_in_constructor_and_templates():
    sensor = FeatureFreshnessSensor(task_id="s", repo_path="/does/not/exist", feature_service="x",
                                    target_time="{{ data_interval_end }}", deferrable=True)
    assert set(sensor.template_fields) >= {"repo_path", "feature_service", "target_time", "feature_views"}


# --- pure helpers of the chunked materialization -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, timedelta(0)),
        ("", timedelta(0)),
        (7200, timedelta(hours=2)),
        ("7200", timedelta(hours=2)),
        ("PT2H", timedelta(hours=2)),
        ("P1DT6H30M", timedelta(days=1, hours=6, minutes=30)),
        ("pt90s", timedelta(seconds=90)),
        ("P2W", timedelta(weeks=2)),
        (timedelta(minutes=5), timedelta(minutes=5)),
    ],
)
def test_parse_duration(value, expected):
    from mlops_provider.runtime.features.materialize import parse_duration

    assert parse_duration(value, "overlap") == expected


@pytest.mark.parametrize("value", ["2 hours", "P", "PT", "-5", "P1DT"])
def test_parse_duration_rejects(value):
    from mlops_provider.runtime.features.materialize import parse_duration

    with pytest.raises(FeatureStoreError, match="overlap"):
        parse_duration(value, "overlap")


def test_time_chunks_cover_the_window_without_gaps():
    from mlops_provider.runtime.features.materialize import time_chunks

    a, b = datetime(2013, 1, 1, tzinfo=UTC), datetime(2013, 3, 1, tzinfo=UTC)
    chunks = time_chunks(a, b, timedelta(days=7))
    assert len(chunks) == 9 and chunks[0][0] == a and chunks[-1][1] == b
    assert all(x[1] == y[0] for x, y in zip(chunks, chunks[1:], strict=False))
    assert time_chunks(a, b, None) == [(a, b)] == time_chunks(a, b, timedelta(days=90))
