"""TrainingPolicyOperator against a real MLflow registry (sqlite): gate verdict tags, champion lineage,
label partitions; the circuit breaker asks a human, a promotion closes it again."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException

from mlops_provider.operators.control import TrainingPolicyOperator

MODEL = "guarded_model"
T0 = datetime(2026, 7, 3, 6, tzinfo=UTC)


@pytest.fixture(scope="module")
def empty_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An initialised MLflow sqlite store, created once (migrations take seconds) and copied per test."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("mlflow_template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}", registry_uri=f"sqlite:///{db}").search_registered_models()
    return db


@pytest.fixture
def registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, empty_db: Path):
    import shutil

    from mlflow import MlflowClient

    shutil.copy(empty_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)  # mlflow.set_registry_uri of an earlier test leaks it
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    # the champion's training snapshot: only its manifest matters here (window.end)
    snap = tmp_path / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / "manifest.json").write_text(
        json.dumps(
            {
                "hash": "abc123",
                "window": {"start": "2026-01-01T00:00:00+00:00", "end": "2026-06-30T23:00:00+00:00"},
            }
        )
    )
    (tmp_path / "model").mkdir()
    return SimpleNamespace(client=client, snapshot=str(snap), source=str(tmp_path / "model"), tmp=tmp_path)


def _version(reg, tags: dict[str, str]) -> str:
    mv = reg.client.create_model_version(MODEL, source=reg.source, tags=tags)
    return str(mv.version)


def _labels(tmp: Path, n_new: int) -> str:
    d = tmp / "lake" / "labels"
    d.mkdir(parents=True, exist_ok=True)
    old = pd.date_range("2026-06-01", periods=500, freq="h", tz="UTC")  # inside the champion's window
    new = pd.date_range("2026-07-01", periods=n_new, freq="min", tz="UTC")
    pd.DataFrame({"event_timestamp": old, "arr_delayed": 0}).to_parquet(d / "month=2026-06.parquet")
    pd.DataFrame({"event_timestamp": new, "arr_delayed": 1}).to_parquet(d / "month=2026-07.parquet")
    return str(d)


def _op(reg, labels: str, **guards) -> TrainingPolicyOperator:
    return TrainingPolicyOperator(
        task_id="training_policy",
        model_name=MODEL,
        retrain_on=["drift"],
        asset_kinds={f"drift/{MODEL}": "drift", f"feast/{MODEL}": "features"},
        guards={"min_new_labels": 200, "breaker_rejections": 3, **guards},
        state_path=str(reg.tmp / "state" / "retrain_guard.json"),
        labels_dir=labels,
    )


def _ctx(run_id: str, window_start: datetime | None, run_after: datetime = T0) -> dict:
    events = {}
    if window_start is not None:
        extra = {
            "model_version": "1",
            "window": {
                "start": window_start.isoformat(),
                "end": (window_start + timedelta(days=1)).isoformat(),
            },
        }
        events = {Asset(name=f"drift/{MODEL}"): [SimpleNamespace(extra=extra)]}
    return {
        "dag_run": SimpleNamespace(
            run_id=run_id, dag_id=f"{MODEL}__training", run_after=run_after, logical_date=None
        ),
        "triggering_asset_events": events,
    }


def test_bootstrap_without_a_registered_model(registry) -> None:
    out = _op(registry, _labels(registry.tmp, 10)).execute(_ctx("r0", T0 - timedelta(days=1)))
    assert out["action"] == "train" and out["guard"] == "bootstrap"


def test_breaker_reads_gate_tags_and_counts_new_labels(registry) -> None:
    c = registry.client
    c.create_registered_model(MODEL)
    v1 = _version(registry, {"snapshot_path": registry.snapshot, "gate.decision": "promote"})
    c.set_registered_model_alias(MODEL, "champion", v1)
    for _ in range(3):
        _version(registry, {"gate.decision": "reject", "snapshot_path": registry.snapshot})
    _version(registry, {})  # a version whose gate never ran: ignored, not a rejection
    labels = _labels(registry.tmp, 150)

    # 150 rows after the window end 2026-06-30T23:00
    with pytest.raises(AirflowSkipException, match="only 150 labelled row"):
        _op(registry, labels).execute(_ctx("r1", T0 - timedelta(days=1)))

    labels = _labels(registry.tmp, 600)
    out = _op(registry, labels).execute(_ctx("r2", T0 - timedelta(days=3)))
    assert out["action"] == "ask" and out["rejections"] == 3 and out["new_labels"] == 600
    assert out["details"]["rejected_versions"] == ["4", "3", "2"]

    # a promotion ends the streak: the breaker closes
    v6 = _version(registry, {"gate.decision": "promote"})
    c.set_registered_model_alias(MODEL, "champion", v6)
    c.set_model_version_tag(MODEL, v6, "snapshot_path", registry.snapshot)
    out = _op(registry, labels).execute(_ctx("r3", T0 + timedelta(days=5), T0 + timedelta(days=6)))
    assert out["action"] == "train" and out["rejections"] == 0 and out["champion"] == v6

    # the same run again decides the same, even though the registry changed meanwhile
    for _ in range(3):
        _version(registry, {"gate.decision": "reject"})
    again = _op(registry, labels).execute(_ctx("r3", T0 + timedelta(days=5), T0 + timedelta(days=6)))
    assert again == out


def test_features_refresh_does_not_retrain_once_a_champion_exists(registry) -> None:
    c = registry.client
    c.create_registered_model(MODEL)
    c.set_registered_model_alias(MODEL, "champion", _version(registry, {"snapshot_path": registry.snapshot}))
    ctx = _ctx("r1", None)
    ctx["triggering_asset_events"] = {Asset(name=f"feast/{MODEL}"): [SimpleNamespace(extra={})]}
    with pytest.raises(AirflowSkipException, match="retraining is driven by"):
        _op(registry, _labels(registry.tmp, 10)).execute(ctx)
