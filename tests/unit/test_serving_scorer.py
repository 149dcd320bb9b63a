"""The scoring core on an in-memory feature store: TTLs enforced as of each request's event time (stale,
future and missing values are served as missing and counted), the stale-feature policy, the inference log's
per-row event time, traffic class and freshness columns, and the outputs of every task type."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace as NS
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops_provider.runtime.serving.inference_log import read_inference_log
from mlops_provider.runtime.serving.request_schema import request_schema
from mlops_provider.runtime.serving.schema import ServiceConfig, TaskInfo
from mlops_provider.runtime.serving.scorer import Scorer, StaleFeaturesError

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
VIEWS = {  # view -> (join key, features, ttl)
    "station_hourly": ("station", ["temp", "wind"], timedelta(hours=3)),
    "account_daily": ("account", ["balance"], timedelta(days=2)),
}


class FakeStore:
    """Just enough of ``feast.FeatureStore`` for the scorer; values carry event timestamps like Feast's."""

    def __init__(self) -> None:
        self.rows: dict[str, dict[str, tuple[datetime, dict[str, Any]]]] = {v: {} for v in VIEWS}
        projs = [NS(name=v, features=[NS(name=f) for f in feats], join_key_map={})
                 for v, (_, feats, _) in VIEWS.items()]
        projs.append(NS(name="request_features", features=[NS(name="hour")], join_key_map={}))
        self.service = NS(name="svc", feature_view_projections=projs, tags={"model": "risk_model"})
        self.reads = 0

    def put(self, view: str, key: str, ts: datetime, **values: Any) -> None:
        self.rows[view][key] = (ts, values)

    def get_feature_service(self, name: str) -> Any:
        if name != "svc":
            raise KeyError(name)
        return self.service

    def get_feature_view(self, name: str) -> Any:
        if name not in VIEWS:
            raise KeyError(name)
        key, _, ttl = VIEWS[name]
        return NS(entities=[key], entity_columns=[NS(name=key, dtype="STRING")], ttl=ttl, stream_source=None)

    def get_entity(self, name: str) -> Any:
        return NS(name=name, join_key=name, value_type="STRING", description="")

    def get_on_demand_feature_view(self, name: str) -> Any:
        return NS(source_request_sources={"req": NS(schema=[NS(name="hour", dtype="INT64")])})

    def get_online_features(self, features: Any, entity_rows: list[dict], full_feature_names: bool) -> Any:
        self.reads += 1
        out: dict[str, list[Any]] = {"station": [], "account": [], "hour": []}
        for view, (key, feats, _) in VIEWS.items():
            for f in feats:
                out[f], out[f + "__ts"] = [], []
            for row in entity_rows:
                ts, values = self.rows[view].get(row[key], (None, {}))
                for f in feats:
                    out[f].append(values.get(f))
                    out[f + "__ts"].append(int(ts.timestamp()) if ts else 0)
        for row in entity_rows:
            out["station"].append(row["station"])
            out["account"].append(row["account"])
            out["hour"].append(float(row["hour"]))
        return NS(to_dict=lambda include_event_timestamps=False: out)


def _config(tmp_path: Path, **kw: Any) -> ServiceConfig:
    info = {"name": "svc", "model": "risk_model",
            "entities": [{"join_key": "station", "dtype": "STRING"}, {"join_key": "account", "dtype": "STRING"}],
            "request_fields": [{"name": "hour", "dtype": "INT64"}]}
    data = dict(
        model_name="risk_model", model_tag="risk_model:v1", model_version="1", bento_tag="risk_model_service:v1-x",
        feature_repo="/unused", feature_service="svc", categorical=["station"],
        numeric=["temp", "wind", "balance", "hour"], inference_log_dir=str(tmp_path / "log"),
        log_flush_interval_s=0, request_schema=request_schema(info),
    )
    data.update(kw)
    return ServiceConfig.model_validate(data)


def _model(frame: pd.DataFrame) -> np.ndarray:
    return np.full(len(frame), 0.7)


@pytest.fixture
def store() -> FakeStore:
    s = FakeStore()
    s.put("station_hourly", "S1", NOW - timedelta(hours=1), temp=20.0, wind=3.0)  # fresh at NOW
    s.put("station_hourly", "S2", NOW - timedelta(hours=5), temp=10.0, wind=1.0)  # older than its 3 h TTL
    s.put("account_daily", "A1", NOW - timedelta(hours=30), balance=100.0)
    return s


def _rows(scorer: Scorer, *reqs: dict) -> list[Any]:
    return [scorer.models.request.model_validate_json(json.dumps(r)) for r in reqs]


def test_ttl_is_enforced_as_of_each_requests_event_time(store: FakeStore, tmp_path: Path) -> None:
    import prometheus_client

    def sample(name: str, **labels: str) -> float:
        return prometheus_client.REGISTRY.get_sample_value(name, labels) or 0.0

    before = {k: sample("mlops_feature_stale_total", feature=k) for k in ("temp", "balance")}
    missing_before = sample("mlops_feature_missing_total", feature="balance")
    scorer = Scorer(_config(tmp_path), load_model=lambda tag: _model, store=store)
    try:
        reqs = _rows(
            scorer,
            {"station": "S1", "account": "A1", "hour": 9, "request_id": "fresh",
             "event_timestamp": NOW.isoformat()},
            {"station": "S2", "account": "A1", "hour": 9, "request_id": "stale",
             "event_timestamp": NOW.isoformat()},
            # a replay: the station's value was written AFTER this event time -> not used (no future leakage)
            {"station": "S1", "account": "A1", "hour": 9, "request_id": "replay",
             "event_timestamp": (NOW - timedelta(hours=2)).isoformat()},
            {"station": "S1", "account": "ZZ", "hour": 9, "request_id": "unknown",
             "event_timestamp": "2024-06-01T14:00:00+02:00"},  # the same instant as NOW, another offset
        )
        frame, full = scorer.lookup(reqs)
        assert frame["temp"].tolist()[0] == 20.0 and np.isnan(frame["temp"].tolist()[1:3]).all()
        assert frame["temp"].iloc[3] == 20.0 and np.isnan(frame["balance"].iloc[3])
        assert frame["balance"].tolist()[:3] == [100.0, 100.0, 100.0]  # 30 h old, TTL 2 days: fresh
        assert frame.columns.tolist() == ["station", "temp", "wind", "balance", "hour"]
        out = scorer.score(reqs, traffic=["live", "smoke", "shadow", "live"])
        assert [p.probability for p in out] == [0.7] * 4 and [p.prediction for p in out] == [1] * 4  # type: ignore[attr-defined]
    finally:
        scorer.close()
    log = read_inference_log(tmp_path / "log").set_index("request_id")
    assert log.loc["fresh", "__age_s__temp"] == 3600.0 and log.loc["fresh", "__age_s__balance"] == 30 * 3600.0
    assert np.isnan(log.loc["stale", "__age_s__temp"]) and log.loc["stale", "stale_features"] == "temp,wind"
    assert log.loc["replay", "stale_features"] == "temp,wind" and log.loc["replay", "unknown_entities"] == ""
    assert log.loc["unknown", "unknown_entities"] == "account" and log.loc["unknown", "missing_features"] == 1
    assert log.loc["replay", "timestamp"] == pd.Timestamp(NOW - timedelta(hours=2))  # stamped with the event time
    assert log.loc["unknown", "timestamp"] == pd.Timestamp(NOW)
    assert log["traffic"].to_dict() == {"fresh": "live", "stale": "smoke", "replay": "shadow", "unknown": "live"}
    assert log.loc["fresh", "temp"] == 20.0 and np.isnan(log.loc["stale", "temp"])  # the value SERVED
    assert (log["probability"] == 0.7).all() and (log["prediction"] == 1).all()
    assert sample("mlops_feature_stale_total", feature="temp") - before["temp"] == 2
    assert sample("mlops_feature_stale_total", feature="balance") - before["balance"] == 0
    assert sample("mlops_feature_missing_total", feature="balance") - missing_before == 1
    assert sample("mlops_feature_age_seconds_count", view="station_hourly") >= 2


def test_requests_without_an_event_time_are_served_as_of_now(store: FakeStore, tmp_path: Path) -> None:
    scorer = Scorer(_config(tmp_path), load_model=lambda tag: _model, store=store)
    try:
        (row,) = _rows(scorer, {"station": "S1", "account": "A1", "hour": 1})
        frame, _ = scorer.lookup([row], now=NOW + timedelta(hours=1, minutes=59))
        assert frame["temp"].iloc[0] == 20.0
        frame, _ = scorer.lookup([row], now=NOW + timedelta(hours=2, seconds=1))  # just past the 3 h TTL
        assert np.isnan(frame["temp"].iloc[0])
    finally:
        scorer.close()


def test_reject_policy_refuses_the_request_and_logs_nothing_of_it(store: FakeStore, tmp_path: Path) -> None:
    scorer = Scorer(_config(tmp_path, stale_features="reject"), load_model=lambda tag: _model, store=store)
    try:
        reqs = _rows(scorer, {"station": "S1", "account": "A1", "hour": 1, "request_id": "ok",
                              "event_timestamp": NOW.isoformat()},
                     {"station": "S2", "account": "A1", "hour": 1, "request_id": "old",
                      "event_timestamp": NOW.isoformat()})
        with pytest.raises(StaleFeaturesError, match="old") as err:
            scorer.score(reqs)
        assert err.value.stale == {"old": ["temp", "wind"]}
        seen: list[list[str]] = []
        scored = scorer.score_rows(reqs, on_stale=lambda stale: seen.extend(stale) or [bool(s) for s in stale])
        assert seen == [[], ["temp", "wind"]] and scored.logged == 1 and len(scored.predictions) == 2
        # missing values (an unknown entity) are the defined fallback, not stale
        unknown = _rows(scorer, {"station": "S1", "account": "NEW", "hour": 1, "event_timestamp": NOW.isoformat()})
        assert scorer.score_rows(unknown).logged == 1
    finally:
        scorer.close()
    assert list(read_inference_log(tmp_path / "log")["request_id"])[:1] == ["ok"]


def test_warm_up_uses_the_bundled_sample_and_is_not_logged(store: FakeStore, tmp_path: Path) -> None:
    calls: list[int] = []

    def model(frame: pd.DataFrame) -> np.ndarray:
        calls.append(len(frame))
        return np.full(len(frame), 0.2)

    sample = {"station": "S1", "account": "A1", "hour": 3}
    scorer = Scorer(_config(tmp_path, sample_requests=[sample], stale_features="reject"),
                    load_model=lambda tag: model, store=store)
    scorer.warm_up()
    scorer.close()
    assert scorer.ready and calls == [1] and store.reads == 1
    assert read_inference_log(tmp_path / "log").empty
    # no sample and a required field without example: only the model is exercised
    bare = Scorer(_config(tmp_path / "b"), load_model=lambda tag: model, store=store)
    bare.warm_up()
    bare.close()
    assert bare.ready and calls == [1, 1] and store.reads == 1


def test_outputs_of_every_task(store: FakeStore, tmp_path: Path) -> None:
    req = {"station": "S1", "account": "A1", "hour": 1, "request_id": "r", "event_timestamp": NOW.isoformat()}

    def run(task: TaskInfo, out: np.ndarray, sub: str, **kw: Any) -> tuple[Any, pd.DataFrame]:
        cfg = _config(tmp_path / sub, task=task.model_dump(), **kw)
        s = Scorer(cfg, load_model=lambda tag: (lambda f: np.repeat(out[None, ...], len(f), axis=0)), store=store)
        try:
            pred = s.score(_rows(s, req))[0]
        finally:
            s.close()
        return pred, read_inference_log(tmp_path / sub / "log")

    p, log = run(TaskInfo(), np.array(0.3), "binary", threshold=0.25)
    assert (p.probability, p.prediction) == (0.3, 1) and type(p).__name__ == "RiskModelPrediction"
    p, log = run(TaskInfo(type="multiclass", classes=["low", "mid", "high"]), np.array([0.1, 0.3, 0.6]), "multi")
    assert p.prediction == "high" and p.probabilities == {"low": 0.1, "mid": 0.3, "high": 0.6}
    assert log["prediction"].iloc[0] == "high" and json.loads(log["probabilities"].iloc[0])["mid"] == 0.3
    assert "probability" not in log.columns
    p, log = run(TaskInfo(type="regression", quantiles=[0.1, 0.9]), np.array([5.0, 2.0, 9.0]), "quant")
    assert p.prediction == 5.0 and p.quantiles == {"0.1": 2.0, "0.9": 9.0}
    assert log[["prediction", "quantile_0.1", "quantile_0.9"]].iloc[0].tolist() == [5.0, 2.0, 9.0]
    p, _ = run(TaskInfo(type="regression"), np.array(4.5), "point")
    assert p.prediction == 4.5 and not hasattr(p, "quantiles")
    with pytest.raises(RuntimeError, match="expected 3 columns"):
        run(TaskInfo(type="multiclass", classes=["a", "b", "c"]), np.array([0.5, 0.5]), "bad")
