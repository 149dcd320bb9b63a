"""Chunked materialization and freshness on real Feast (tmp home, the example feature_repo, Jan-Feb 2013).

* chunked materialize writes the same online rows as ``FeatureStore.materialize`` on the same window;
* a re-run of the window is an upsert (identical online rows);
* the window is recorded on every view in the registry, and Feast's ``materialize_incremental`` carries on
  from it;
* the freshness sensor fails naming the stale views before, and passes after, materialization.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from conftest_features import FEATURE_REPO, FEATURE_SERVICE, load_transforms

from mlops_provider.exceptions import FeatureStoreError

pytestmark = pytest.mark.integration

VIEWS = ["carrier_delay_stats", "origin_weather_hourly", "plane_attributes"]
JAN = datetime(2013, 1, 1, tzinfo=UTC)
MAR = datetime(2013, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """Jan + Feb 2013 and planes landed and built into lake partitions; ``feast apply`` done."""
    from mlops_provider.examples.flights.data import write_landing_month, write_landing_planes
    from mlops_provider.paths import ModelPaths
    from mlops_provider.runtime.features.store import apply_repo, open_store

    h = tmp_path_factory.mktemp("mlops_home_chunked")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(h))
        paths = ModelPaths.for_model("flights_delay", h)
        landed = [*write_landing_month(paths.landing, 2013, 1), *write_landing_month(paths.landing, 2013, 2),
                  write_landing_planes(paths.landing)]
        built = load_transforms().build_partitions(landed, str(paths.lake))
        store = open_store(FEATURE_REPO)
        assert apply_repo(store)["changed"] is True
        yield {"home": h, "paths": paths, "built": built, "store": store}


def _online_rows(store) -> dict[str, set[tuple]]:
    """Every row of the sqlite online tables of the views: {view: {(entity_key, feature, value, event_ts)}}."""
    con = sqlite3.connect(store.config.online_store.path)
    try:
        out = {}
        for view in VIEWS:
            table = f"{store.project}_{view}"
            out[view] = set(con.execute(f'SELECT entity_key, feature_name, value, event_ts FROM "{table}"'))
        return out
    finally:
        con.close()


def _clear_online(store) -> None:
    con = sqlite3.connect(store.config.online_store.path)
    with con:
        for view in VIEWS:
            con.execute(f'DELETE FROM "{store.project}_{view}"')
    con.close()


def _intervals(store, view: str) -> list[tuple[datetime, datetime]]:
    def utc(t: datetime) -> datetime:
        return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)

    store.refresh_registry()
    return [(utc(a), utc(b)) for a, b in store.get_feature_view(view).materialization_intervals]


def _sensor(**kw):
    from mlops_provider.sensors.feast import FeatureFreshnessSensor

    return FeatureFreshnessSensor(
        task_id="fresh", repo_path=str(FEATURE_REPO), feature_service=FEATURE_SERVICE, poke_interval=0.1, **kw
    )


def test_freshness_sensor_times_out_naming_views_before_materialize(home):
    from airflow.sdk.exceptions import AirflowSensorTimeout

    from mlops_provider.sensors.feast import FeatureFreshnessTimeout

    sensor = _sensor(target_time=MAR.isoformat(), timeout=0.3)
    with pytest.raises(FeatureFreshnessTimeout) as err:
        sensor.execute(context={})
    msg = str(err.value)
    for view in VIEWS:
        assert f"{view} (never materialized)" in msg, msg
    assert "request_time_features" not in msg  # on-demand views are never materialized: not checked
    assert isinstance(err.value, FeatureStoreError) and isinstance(err.value, AirflowSensorTimeout)


def test_chunked_equals_plain_feast_rerun_upserts_and_records_intervals(home):
    import pandas as pd

    from mlops_provider.operators.feast import FeastMaterializeOperator

    store = home["store"]
    _clear_online(store)
    # plain Feast on the window -> reference online rows
    store.materialize(start_date=JAN, end_date=MAR, feature_views=VIEWS)
    reference = _online_rows(store)
    assert all(reference[v] for v in VIEWS)
    before = {v: len(_intervals(store, v)) for v in VIEWS}
    _clear_online(store)

    # ours: weekly chunks, window from the data interval in the context (start/end not given)
    op = FeastMaterializeOperator(task_id="materialize", repo_path=str(FEATURE_REPO), chunk_hours=24 * 7)
    result = op.execute(context={"data_interval_start": JAN, "data_interval_end": MAR})
    assert _online_rows(store) == reference
    assert result["chunks"] == 9  # 59 days in 7-day chunks
    assert set(result["engine"].values()) == {"arrow"}
    assert result["window"] == {"start": JAN.isoformat(), "end": MAR.isoformat(), "overlap_seconds": 0.0,
                                "materialized_start": JAN.isoformat()}
    ts = pd.read_parquet(home["paths"].offline / "origin_weather_hourly")["event_timestamp"]
    in_window = int(((ts >= pd.Timestamp(JAN)) & (ts <= pd.Timestamp(MAR))).sum())
    assert result["rows_read"]["origin_weather_hourly"] == in_window > 4000  # each row in the window read once
    assert result["rows"]["origin_weather_hourly"] == 3  # EWR, JFK, LGA
    assert result["rows_written"]["origin_weather_hourly"] == 3  # chunks merged, newest wins: one write each
    assert result["rows"]["plane_attributes"] == result["rows_written"]["plane_attributes"] > 3000
    # the window is recorded on every view, once
    for v in VIEWS:
        assert len(_intervals(store, v)) == before[v] + 1
        assert _intervals(store, v)[-1] == (JAN, MAR)

    # re-run of the same window (fresh operator, fresh store): an upsert, same rows and counts
    again = FeastMaterializeOperator(
        task_id="materialize", repo_path=str(FEATURE_REPO), start=JAN.isoformat(), end=MAR.isoformat(),
        chunk_hours=24 * 7,
    ).execute(context={})
    assert _online_rows(store) == reference
    assert again["rows_written"] == result["rows_written"] and again["rows"] == result["rows"]

    # flushing after every chunk (tiny pending budget) writes more rows, and leaves the same online rows
    from mlops_provider.runtime.features.materialize import materialize

    _clear_online(store)
    flushed = materialize(store, JAN, MAR, VIEWS, chunk=timedelta(days=7), max_pending_rows=1)
    assert 3 < flushed["rows_written"]["origin_weather_hourly"] <= 3 * 9
    assert flushed["rows"] == result["rows"]
    assert _online_rows(store) == reference

    # unchunked (chunk_hours=0) gives the same online rows too
    _clear_online(store)
    whole = FeastMaterializeOperator(
        task_id="materialize", repo_path=str(FEATURE_REPO), start=JAN.isoformat(), end=MAR.isoformat(),
        chunk_hours=0,
    ).execute(context={})
    assert whole["chunks"] == 1
    assert whole["rows_written"] == whole["rows"]
    assert _online_rows(store) == reference

    # the fallback engine (Feast's own, per chunk; used for non-parquet sources) agrees too
    _clear_online(store)
    fallback = materialize(store, JAN, MAR, VIEWS, chunk=timedelta(days=7), engine="feast")
    assert set(fallback["engine"].values()) == {"feast"} and fallback["rows_read"] == dict.fromkeys(VIEWS)
    assert _online_rows(store) == reference


def test_overlap_and_asset_extra(home):
    import pandas as pd
    from airflow.sdk import Asset

    from mlops_provider.operators.feast import FeastMaterializeOperator

    asset = Asset(name="feast/flights_delay_v1", uri="x-mlops://feast/flights_delay_v1")

    class _Event:
        extra: dict = {}

    events = {asset: _Event()}
    start = datetime(2013, 2, 10, tzinfo=UTC)
    result = FeastMaterializeOperator(
        task_id="materialize", repo_path=str(FEATURE_REPO), start=start.isoformat(),
        end=datetime(2013, 2, 12, tzinfo=UTC).isoformat(), feature_views=["origin_weather_hourly"],
        overlap="PT6H", chunk_hours=12, outlets=[asset],
    ).execute(context={"outlet_events": events})
    assert result["window"]["materialized_start"] == (start - timedelta(hours=6)).isoformat()
    assert result["chunks"] == 5  # 54 h in 12 h chunks
    weather = pd.read_parquet(home["paths"].offline / "origin_weather_hourly")
    ts = weather["event_timestamp"]
    expected = int(((ts >= pd.Timestamp(start - timedelta(hours=6))) & (ts <= pd.Timestamp(2013, 2, 12, tz="UTC"))).sum())
    assert 3 * 50 < expected <= 3 * 55  # 3 airports x 55 hours (both ends included), a few hours missing
    assert result["rows_read"] == {"origin_weather_hourly": expected}
    assert events[asset].extra == result
    assert _intervals(home["store"], "origin_weather_hourly")[-1][0] == start - timedelta(hours=6)


def test_feast_materialize_incremental_continues_from_our_window(home):
    store = home["store"]
    ends_before = {v: max(b for _, b in _intervals(store, v)) for v in VIEWS}
    assert ends_before == {v: MAR for v in VIEWS}
    store.materialize_incremental(end_date=MAR + timedelta(days=1), feature_views=["carrier_delay_stats"])
    assert _intervals(store, "carrier_delay_stats")[-1] == (MAR, MAR + timedelta(days=1))


def test_freshness_sensor_passes_after_materialize_and_reports_lag(home):
    from mlops_provider.sensors.feast import FeatureFreshnessTimeout

    # poke mode, target = end of the data interval from the context
    report = _sensor(timeout=5).execute(context={"data_interval_end": MAR})
    assert report["fresh"] is True and report["stale"] == []
    assert set(report["views"]) == set(VIEWS)
    # a later target: every view is a known amount behind (carrier stats went one day further)
    late = MAR + timedelta(days=2)
    with pytest.raises(FeatureFreshnessTimeout) as err:
        _sensor(target_time=late.isoformat(), timeout=0.2).execute(context={})
    msg = str(err.value)
    assert "carrier_delay_stats (materialized until 2013-03-02T00:00:00+00:00, 1 day, 0:00:00 behind)" in msg
    assert "origin_weather_hourly (materialized until 2013-03-01T00:00:00+00:00, 2 days, 0:00:00 behind)" in msg


def test_unknown_view_and_inverted_window_raise_named_errors(home):
    from mlops_provider.operators.feast import FeastMaterializeOperator

    with pytest.raises(FeatureStoreError, match="unknown feature view"):
        FeastMaterializeOperator(task_id="m", repo_path=str(FEATURE_REPO), start=JAN.isoformat(),
                                 end=MAR.isoformat(), feature_views=["nope"]).execute(context={})
    with pytest.raises(FeatureStoreError, match="empty or inverted"):
        FeastMaterializeOperator(task_id="m", repo_path=str(FEATURE_REPO), start=MAR.isoformat(),
                                 end=JAN.isoformat()).execute(context={})
    with pytest.raises(FeatureStoreError, match="no materialization start"):
        FeastMaterializeOperator(task_id="m", repo_path=str(FEATURE_REPO)).execute(context={})


def test_trigger_reads_the_real_registry_in_a_thread(home):
    import asyncio

    from mlops_provider.triggers.feast import FeatureFreshnessTrigger

    async def first_event(trigger):
        async for ev in trigger.run():
            return ev.payload

    fresh = FeatureFreshnessTrigger(repo_path=str(FEATURE_REPO), target_time=MAR.isoformat(),
                                    feature_service=FEATURE_SERVICE, poll_interval=0.1)
    event = asyncio.run(first_event(fresh))
    assert event["status"] == "success" and set(event["report"]["views"]) == set(VIEWS)

    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    stale = FeatureFreshnessTrigger(repo_path=str(FEATURE_REPO), target_time=(MAR + timedelta(days=30)).isoformat(),
                                    feature_service=FEATURE_SERVICE, poll_interval=0.1, deadline=past)
    event = asyncio.run(first_event(stale))
    assert event["status"] == "timeout" and event["report"]["stale"] == VIEWS


def test_apply_logs_diff_reports_noop_and_keeps_materialization_history(home, tmp_path, capsys):
    import shutil

    from mlops_provider.operators.feast import FeastApplyOperator
    from mlops_provider.runtime.features.materialize import materialize

    store = home["store"]
    materialize(store, JAN, JAN + timedelta(days=1), ["plane_attributes"])
    intervals = _intervals(store, "plane_attributes")
    assert intervals
    repo = tmp_path / "repo"
    shutil.copytree(FEATURE_REPO, repo, ignore=shutil.ignore_patterns("__pycache__"))
    capsys.readouterr()

    noop = FeastApplyOperator(task_id="apply", repo_path=str(repo)).execute(context={})
    assert noop == {"changed": False, "diff": ""}
    assert "no-op, the registry already matches" in capsys.readouterr().out

    defs = repo / "definitions.py"
    defs.write_text(defs.read_text().replace('description="Static plane attributes"', "").replace(
        'tags={"model": MODEL},\n)\n\n# --- request-time', 'tags={"model": MODEL, "owner": "features"},\n)\n\n# --- request-time'))
    changed = FeastApplyOperator(task_id="apply", repo_path=str(repo)).execute(context={})
    assert changed["changed"] is True
    assert "plane_attributes" in changed["diff"] and "owner" in changed["diff"]
    out = capsys.readouterr().out
    assert "applied these changes" in out and "plane_attributes" in out
    # an update of a view's definition keeps its materialization history (feast#2905)
    assert _intervals(store, "plane_attributes") == intervals
    again = FeastApplyOperator(task_id="apply", repo_path=str(repo)).execute(context={})
    assert again == {"changed": False, "diff": ""}
