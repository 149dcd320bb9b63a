"""Retrain guards: the pure decision (runtime.retrain_guard) and the policy / approval operators' glue."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException

from mlops_provider.exceptions import RetrainGuardStateError
from mlops_provider.operators.control import RetrainApprovalOperator, TrainingPolicyOperator
from mlops_provider.runtime.monitoring import retrain_guard as rg
from mlops_provider.runtime.monitoring.policy import count_new_labels

T0 = datetime(2026, 7, 1, 12, tzinfo=UTC)
DAY = timedelta(days=1)
SETTINGS = rg.GuardSettings(
    cooldown_hours=24, max_retrains=2, max_retrains_window_hours=168, min_new_labels=100, breaker_rejections=3
)


def drift(start: datetime, hours: int = 24, version: str = "1", **extra: Any) -> tuple[str, dict[str, Any]]:
    window = {"start": start.isoformat(), "end": (start + timedelta(hours=hours)).isoformat()}
    return "drift", {"model_version": version, "window": window, "share": 0.5, **extra}


def run(
    ledger: dict,
    key: str,
    now: datetime,
    triggered,
    *,
    champion: str | None = "1",
    settings=SETTINGS,
    rejections=(0, []),
    new_labels: int | None = 5000,
    manual: bool = False,
) -> rg.Decision:
    d = rg.decide(
        key=key,
        now=now,
        triggered=list(triggered),
        manual=manual,
        champion=champion,
        retrain_on=["drift"],
        settings=settings,
        ledger=ledger,
        rejections=rejections,
        new_labels=new_labels,
        champion_window_end="2026-06-30T00:00:00+00:00",
    )
    rg.record(ledger, d)
    return d


def test_bootstrap_and_manual_train_without_starting_guards() -> None:
    ledger: dict = {}
    assert run(ledger, "r1", T0, [("features", {})], champion=None).guard == "bootstrap"
    # the demo's sequence: features refresh (skipped by retrain_on), then the first drift retrain right away
    assert run(ledger, "r2", T0 + timedelta(minutes=5), [("features", {})]).action == "skip"
    d = run(ledger, "r3", T0 + timedelta(minutes=10), [drift(T0)])
    assert (d.action, d.guard) == ("train", "ok"), d.reason
    assert run(ledger, "r4", T0, [], manual=True).guard == "manual"


def test_dedupe_one_retrain_per_episode() -> None:
    ledger: dict = {}
    first = run(ledger, "a", T0, [drift(T0 - DAY)])
    assert first.action == "train"
    # the next daily window continues the same episode: skipped even after the cooldown
    again = run(ledger, "b", T0 + 2 * DAY, [drift(T0)])
    assert (again.action, again.guard) == ("skip", "dedupe") and again.episode == first.episode
    # a gap (a window without drift) starts a new episode
    new = run(ledger, "c", T0 + 4 * DAY, [drift(T0 + 2 * DAY)])
    assert new.action == "train" and new.episode != first.episode
    # a new champion starts a new episode too, even for an adjacent window
    other = run(ledger, "d", T0 + 6 * DAY, [drift(T0 + 3 * DAY, version="2")], champion="2")
    assert other.episode != new.episode and other.guard != "dedupe"
    # an explicit episode id in the event wins
    e1 = run(ledger, "e", T0 + 9 * DAY, [drift(T0 + 8 * DAY, episode="ep-9")])
    e2 = run(ledger, "f", T0 + 11 * DAY, [drift(T0 + 20 * DAY, episode="ep-9")])
    assert e1.action == "train" and (e2.action, e2.guard) == ("skip", "dedupe")


def test_episode_blocked_by_cooldown_can_retrain_later() -> None:
    ledger: dict = {}
    assert run(ledger, "a", T0, [drift(T0 - 3 * DAY)]).action == "train"
    blocked = run(ledger, "b", T0 + timedelta(hours=2), [drift(T0 - DAY)])
    assert (blocked.action, blocked.guard) == ("skip", "cooldown") and "next allowed after" in blocked.reason
    later = run(ledger, "c", T0 + DAY + timedelta(hours=1), [drift(T0)])  # same (new) episode as "b"
    assert later.episode == blocked.episode and later.action == "train"


def test_rate_limit_per_window() -> None:
    ledger: dict = {}
    for i in range(2):
        assert run(ledger, f"r{i}", T0 + i * 2 * DAY, [drift(T0 + i * 5 * DAY)]).action == "train"
    third = run(ledger, "r2", T0 + 4 * DAY, [drift(T0 + 20 * DAY)])
    assert (third.action, third.guard) == ("skip", "rate")
    # the first retrain has left the window
    assert run(ledger, "r3", T0 + 8 * DAY, [drift(T0 + 40 * DAY)]).action == "train"


def test_minimum_new_labels() -> None:
    d = run({}, "a", T0, [drift(T0)], new_labels=99)
    assert (d.action, d.guard) == ("skip", "new_labels") and "99" in d.reason
    assert run({}, "a", T0, [drift(T0)], new_labels=100).action == "train"


def test_circuit_breaker_asks_a_human_and_other_guards_come_first() -> None:
    d = run({}, "a", T0, [drift(T0)], rejections=(3, ["7", "6", "5"]))
    assert (d.action, d.guard) == ("ask", "breaker") and d.rejections == 3 and not d.counts_as_retrain
    assert run({}, "a", T0, [drift(T0)], rejections=(2, ["7", "6"])).action == "train"
    # new labels missing: skip rather than bother a human
    assert run({}, "a", T0, [drift(T0)], rejections=(5, []), new_labels=0).action == "skip"
    off = rg.GuardSettings(breaker_rejections=0, min_new_labels=0)
    assert run({}, "a", T0, [drift(T0)], rejections=(9, []), settings=off).action == "train"


def test_consecutive_rejections_reads_gate_tags_tolerantly() -> None:
    def v(n, decision=None):
        return SimpleNamespace(version=str(n), tags={"gate.decision": decision} if decision else {})

    versions = [v(1, "promote"), v(2, "reject"), v(3, "reject"), v(4), v(5, "REJECT"), v(6, "shadow")]
    assert rg.consecutive_rejections(versions, champion="1") == (3, ["5", "3", "2"])
    assert rg.consecutive_rejections([*versions, v(7, "promote")], champion="1")[0] == 0
    assert rg.consecutive_rejections(versions, champion="3") == (1, ["5"])  # stops at the champion
    assert rg.consecutive_rejections(
        [{"version": "x", "tags": None}, {"version": 2, "tags": None}], None
    ) == (0, [])


def test_count_new_labels(tmp_path: Path) -> None:
    ts = pd.date_range("2026-06-28", periods=96, freq="h", tz="UTC")
    pd.DataFrame({"event_timestamp": ts[:48], "y": 0}).to_parquet(tmp_path / "month=2026-06.parquet")
    pd.DataFrame({"event_timestamp": ts[48:], "y": 1}).to_parquet(tmp_path / "month=2026-07.parquet")
    cut = datetime(2026, 6, 29, 23, tzinfo=UTC)
    assert count_new_labels(tmp_path, cut) == int((ts > cut).sum()) == 48
    assert count_new_labels(tmp_path, None) == 96
    assert count_new_labels(tmp_path / "missing", cut) == 0


def test_ledger_is_durable_and_corruption_is_a_named_error(tmp_path: Path) -> None:
    ledger = rg.GuardLedger(tmp_path / "g.json", "m")
    with ledger.locked() as data:
        rg.record(data, run(data, "k", T0, [("drift", {})]))
    assert "k" in json.loads((tmp_path / "g.json").read_text())["decisions"]
    (tmp_path / "g.json").write_text("{not json")
    with pytest.raises(RetrainGuardStateError, match="delete the"):
        ledger.read()


# ---------------------------------------------------------------------------- operator glue
class _Policy(TrainingPolicyOperator):
    """The registry answers come from attributes (the MLflow parts run in the integration test)."""

    champion: str | None = "1"
    rejections: tuple[int, list[str]] = (0, [])
    window_end: str | None = "2026-06-30T00:00:00+00:00"
    calls = 0

    def registry(self, store):
        op = self

        class Fake:
            def champion_version(self):
                type(op).calls += 1
                return op.champion

            def gate_rejections(self, champion):
                return op.rejections

            def champion_window_end(self, champion):
                return op.window_end

        return Fake()


def _context(run_id: str, events: list[tuple[str, dict]], run_after: datetime = T0) -> dict:
    asset_events: dict = {}
    for name, extra in events:
        asset_events.setdefault(Asset(name=name), []).append(SimpleNamespace(extra=extra))
    dag_run = SimpleNamespace(run_id=run_id, dag_id="m__training", run_after=run_after, logical_date=None)
    return {"dag_run": dag_run, "triggering_asset_events": asset_events}


def _labels(tmp_path: Path, n: int) -> str:
    d = tmp_path / "labels"
    d.mkdir(exist_ok=True)
    ts = pd.date_range("2026-07-01", periods=n, freq="min", tz="UTC")
    pd.DataFrame({"event_timestamp": ts, "y": 1}).to_parquet(d / "month=2026-07.parquet")
    return str(d)


def test_policy_operator_is_idempotent_per_run(tmp_path: Path) -> None:
    state = str(tmp_path / "state" / "m.json")
    op = _Policy(
        task_id="training_policy",
        model_name="m",
        retrain_on=["drift"],
        asset_kinds={"drift/m": "drift"},
        guards={"min_new_labels": 10, "cooldown_hours": 24},
        state_path=state,
        labels_dir=_labels(tmp_path, 50),
    )
    ev = [("drift/m", drift(T0 - DAY)[1])]
    first = op.execute(_context("run1", ev))
    assert first["action"] == "train" and first["new_labels"] == 50 and first["episode"]
    calls = _Policy.calls
    assert op.execute(_context("run1", ev)) == first  # retry of the same run: the recorded decision
    assert _Policy.calls == calls  # ... without asking the registry again
    with pytest.raises(AirflowSkipException, match="dedupe"):
        op.execute(_context("run2", [("drift/m", drift(T0)[1])], T0 + 2 * DAY))
    with pytest.raises(AirflowSkipException, match="dedupe"):  # and the skip is idempotent too
        op.execute(_context("run2", [("drift/m", drift(T0)[1])], T0 + 2 * DAY))
    saved = json.loads(Path(state).read_text())
    assert set(saved["decisions"]) == {"m__training/run1", "m__training/run2"}


def test_policy_operator_new_labels_and_breaker(tmp_path: Path) -> None:
    kw = dict(
        task_id="training_policy",
        model_name="m",
        retrain_on=["drift"],
        asset_kinds={"drift/m": "drift"},
        state_path=str(tmp_path / "g.json"),
        guards={"min_new_labels": 1000},
    )
    op = _Policy(labels_dir=_labels(tmp_path, 30), **kw)
    with pytest.raises(AirflowSkipException, match="only 30 labelled row"):
        op.execute(_context("r1", [("drift/m", drift(T0)[1])]))
    op = _Policy(labels_dir=_labels(tmp_path, 1500), **kw)
    op.rejections = (3, ["4", "3", "2"])
    out = op.execute(_context("r2", [("drift/m", drift(T0 + DAY)[1])]))
    assert out["action"] == "ask" and "circuit breaker open" in out["reason"]


class _TI:
    def __init__(self, value: Any) -> None:
        self.value = value

    def xcom_pull(self, task_ids: str) -> Any:
        return self.value


def test_approval_not_needed_when_the_breaker_is_closed(tmp_path: Path) -> None:
    op = RetrainApprovalOperator(
        task_id="approve_retrain", model_name="m", state_path=str(tmp_path / "g.json")
    )
    assert op.defaults == ["Reject"]  # an unanswered request declines
    out = op.execute({"ti": _TI({"action": "train", "key": "k"})})
    assert out == {"approval": "not_needed", "action": "train"}


@pytest.mark.parametrize("choice", ["Approve", "Reject"])
def test_approval_answer_is_stored_in_the_ledger(tmp_path: Path, choice: str) -> None:
    state = tmp_path / "g.json"
    ledger: dict = {}
    decision = run(ledger, "m__training/r9", T0, [drift(T0)], rejections=(3, ["3", "2", "1"]))
    assert decision.action == "ask"
    with rg.GuardLedger(state, "m").locked() as data:
        data.update(ledger)
    op = RetrainApprovalOperator(task_id="approve_retrain", model_name="m", state_path=str(state))
    event = {
        "chosen_options": [choice],
        "params_input": {},
        "responded_at": T0,
        "responded_by_user": {"id": "1", "name": "ops"},
    }
    op.execute_complete({"ti": _TI(decision.as_dict()), "task": op}, event)
    saved = json.loads(state.read_text())
    stored = saved["decisions"]["m__training/r9"]
    assert stored["approval"] == ("approved" if choice == "Approve" else "declined")
    assert stored["counts_as_retrain"] is (choice == "Approve")
    # an approved retrain closes the episode and starts the cooldown
    nxt = run(saved, "m__training/r10", T0 + timedelta(hours=1), [drift(T0 + DAY)], rejections=(3, []))
    assert nxt.action == ("skip" if choice == "Approve" else "ask")


def test_approval_asks_with_the_reason_and_alerts_only_when_the_breaker_is_open(monkeypatch) -> None:
    """The ask path up to the HITL wait (the request the task writes to the API server is captured)."""
    import airflow.providers.standard.operators.hitl as hitl
    from airflow.sdk.exceptions import TaskAwaitingInput

    from mlops_provider.notifications.alerts import LogAlertNotifier

    requests: list[dict] = []
    monkeypatch.setattr(hitl, "upsert_hitl_detail", lambda **kw: requests.append(kw))

    def approval(alert: LogAlertNotifier) -> RetrainApprovalOperator:
        return RetrainApprovalOperator(
            task_id="approve_retrain", model_name="m", notifiers=[alert], response_timeout=timedelta(hours=72)
        )

    quiet = LogAlertNotifier(event="circuit_breaker", model="m")
    ti = _TI({"action": "train", "key": "k", "reason": "guards passed"})
    assert approval(quiet).execute({"ti": ti})["approval"] == "not_needed"
    assert quiet.last_payload is None and requests == []  # nobody asked, nobody alerted

    alert = LogAlertNotifier(event="circuit_breaker", model="m", message="{{ ti.xcom_pull('x')['reason'] }}")
    op = approval(alert)
    ti = _TI({"action": "ask", "key": "k", "reason": "circuit breaker open: 3 rejected"})
    ti.id = "0199"  # type: ignore[attr-defined]
    context = {"ti": ti, "task_instance": ti}
    op.render_template_fields(context)
    with pytest.raises(TaskAwaitingInput):
        op.execute(context)
    (req,) = requests
    assert req["options"] == ["Approve", "Reject"] and req["defaults"] == ["Reject"]
    assert "circuit breaker is open" in req["subject"] and "circuit breaker open: 3 rejected" in req["body"]
    assert alert.last_payload is not None and "3 rejected" in alert.last_payload["text"]


def test_training_dag_puts_the_approval_between_policy_and_dataset() -> None:
    from mlops_provider.config import load_config
    from mlops_provider.factory import build_dags

    repo = Path(__file__).resolve().parents[2]
    dag = build_dags(load_config(repo / "dags" / "flights_delay.yaml"))["flights_delay__training"]
    policy, approval = dag.get_task("training_policy"), dag.get_task("approve_retrain")
    assert approval.upstream_task_ids == {"training_policy"}
    assert dag.get_task("training_dataset").upstream_task_ids == {"approve_retrain"}
    assert policy.state_path == approval.state_path and policy.state_path.endswith(
        "retrain_guard/flights_delay.json"
    )
    assert policy.guards["cooldown_hours"] == 24 and policy.labels_dir.endswith("lake/flights_delay/labels")
    assert [n.event for n in approval.notifiers] == ["circuit_breaker"]
    assert approval.response_timeout == timedelta(hours=72) and approval.defaults == ["Reject"]


def test_an_unreachable_registry_is_not_a_bootstrap(tmp_path: Path) -> None:
    from mlops_provider.exceptions import ModelRegistryError

    class Down(TrainingPolicyOperator):
        def _client(self):
            raise ConnectionError("mlflow at http://127.0.0.1:1 refused the connection")

    op = Down(
        task_id="training_policy",
        model_name="m",
        retrain_on=["drift"],
        asset_kinds={},
        state_path=str(tmp_path / "g.json"),
    )
    with pytest.raises(ModelRegistryError, match="cannot read models:/m@champion"):
        op.execute(_context("r1", [("drift/m", drift(T0)[1])]))
    # nothing decided, nothing recorded
    assert not rg.GuardLedger(tmp_path / "g.json", "m").read()["decisions"]


def test_retrain_when_requires_the_listed_signal_and_records_which_fired() -> None:
    """retrain_when: [performance] -> a data-quality (drift) alarm alone does not retrain; every decision on
    a monitor event says which signal fired (drift / performance / both / none) and why."""
    perf_only = rg.GuardSettings(**{**SETTINGS.__dict__, "retrain_when": ("performance",)})
    quality = drift(T0, signals={"drift": True, "performance": False}, trigger_reasons=["data drift: 1 column"],
                    alarms=["temp: level_shift 2.9 > 1.2"])
    d = run({}, "r1", T0, [quality], settings=perf_only)
    assert d.action == "skip" and d.guard == "signal" and "retrain_when" in d.reason
    assert d.details["signals"]["fired"] == "drift" and d.details["signals"]["retrains"] == []
    assert d.details["signals"]["why"] == ["data drift: 1 column", "temp: level_shift 2.9 > 1.2"]
    perf = drift(T0 + DAY, signals={"drift": False, "performance": True}, trigger_reasons=["performance: cusum"])
    d = run({}, "r2", T0 + DAY, [perf], settings=perf_only)
    assert d.action == "train" and d.details["signals"]["fired"] == "performance"
    both = drift(T0 + 2 * DAY, signals={"drift": True, "performance": True})
    d = run({}, "r3", T0 + 2 * DAY, [both], settings=perf_only)
    assert d.action == "train" and d.details["signals"]["fired"] == "both"
    assert d.details["signals"]["retrains"] == ["performance"]
    # the default (drift or performance) retrains on a drift signal; an old event without flags means drift
    d = run({}, "r4", T0, [drift(T0)])
    assert d.action == "train" and d.details["signals"] == {
        "drift": True, "performance": False, "fired": "drift", "why": [], "retrains": ["drift"]}
    legacy_perf = drift(T0, drift=False, performance={"degraded": True})
    assert rg.event_signals(legacy_perf[1]) == {"drift": False, "performance": True}
    # a run the features asset also triggered (retrain_on: [features, drift]) is not held by the signal guard
    d = rg.decide(key="r5", now=T0, triggered=[("features", {}), quality], manual=False, champion="1",
                  retrain_on=["features", "drift"], settings=perf_only, ledger={}, rejections=(0, []),
                  new_labels=5000)
    assert d.action == "train" and d.details["signals"]["fired"] == "drift"


def test_retrain_when_comes_from_the_yaml(tmp_path: Path) -> None:
    from mlops_provider.runtime.monitoring.policy import run_training_policy
    from mlops_provider.specs import RetrainGuards

    guards = RetrainGuards.parse({"retrain_when": ["performance"]}).model_dump()

    class Registry:
        def champion_version(self) -> str:
            return "1"

        def gate_rejections(self, champion):
            return 0, []

        def champion_window_end(self, champion):
            return None

    d = run_training_policy(model="m", key="k", now=T0, events=[drift(T0, signals={"drift": True,
                                                                                 "performance": False})],
                            retrain_on=["drift"], guards=guards, registry=Registry(),
                            state_path=tmp_path / "ledger.json")
    assert d.action == "skip" and d.guard == "signal"
    recorded = json.loads((tmp_path / "ledger.json").read_text())["decisions"]["k"]
    assert recorded["details"]["signals"]["fired"] == "drift"
    with pytest.raises(ValueError):
        RetrainGuards.parse({"retrain_when": []})
