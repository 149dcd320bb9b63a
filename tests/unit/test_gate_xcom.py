"""The gate's XCom is a bounded summary; promote and approval work from it; the full verdict stays on disk."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from mlops_provider.exceptions import GateRejected
from mlops_provider.runtime.gate.verdict import XCOM_MAX_BYTES, failed_checks_summary, json_safe, xcom_summary

SLICE_VALUES = [f"airport-{i:02d}-with-a-rather-long-name" for i in range(18)]


def check(name: str, kind: str, value: float, bound: float, passed: bool) -> dict:
    return {"name": name, "kind": kind, "value": value, "bound": bound, "passed": passed, "direction": ">=",
            "enforced": True}


def worst_case_verdict(report_path: Path) -> dict:
    """A rejected verdict with 18 slices (floor + regression each, all failing), 3 failing behavioral tests,
    and the heavy parts a model card adds (ROC points, importances, calibration and slice tables)."""
    metrics = {"roc_auc": 0.61, "pr_auc": 0.4, "log_loss": 0.61, "brier": 0.22, "ece": 0.05}
    checks = [
        check("floor.roc_auc", "floor", 0.61, 0.6, True),
        check("regression.roc_auc", "regression", 0.61, 0.695, False),
        check("regression.log_loss", "regression", 0.61, 0.55, False),
    ]
    slices = []
    for v in SLICE_VALUES:
        checks.append(check(f"slice.origin={v}.roc_auc.floor", "slice", 0.5, 0.55, False))
        checks.append(check(f"slice.origin={v}.roc_auc", "slice", 0.5, 0.65, False))
        slices.append({"column": "origin", "value": v, "rows": 400, "metric": "roc_auc", "challenger": 0.5,
                       "champion": 0.7, "judged": True, "reason": ""})
    behavioral = []
    for name in ("tailnum_invariance", "precip_directional", "minimum_functionality"):
        checks.append(check(f"behavioral.{name}", "behavioral", 0.4, 0.9, False))
        behavioral.append({"name": f"behavioral.{name}", "value": 0.4, "bound": 0.9, "passed": False,
                           "failures": [{"row": i, "before": 0.3, "after": 0.5} for i in range(20)]})
    checks.append(check("calibration.ece", "calibration", 0.3, 0.25, False))
    checks.append(check("latency.median_ms", "latency", float("nan"), 2000.0, False))
    points = [i / 199 for i in range(200)]
    comparison = [
        {"metric": m, "guard": m != "roc_auc", "delta": -0.09, "ci": [-0.1234567, -0.0812345], "tolerance": 0.005,
         "passed": False, "message": f"{m} significantly worse: challenger - champion = -0.0900, 95% CI "
                                     "[-0.1235, -0.0812] lies entirely below the tolerance -0.0050"}
        for m in ("roc_auc", "log_loss", "brier", "ece")
    ]
    return {
        "model": "flights_delay",
        "task": "binary",
        "decision": "reject",
        "comparison": comparison,
        "power": {"metric": "roc_auc", "rows": 12000, "se": 0.0061234, "mde": 0.0171556, "confidence": 0.95,
                  "power": 0.8, "basis": "paired", "statement": "with 12000 evaluation rows ..."},
        "bootstrap": False,
        "primary_metric": "roc_auc",
        "evaluated_at": "2026-01-01T00:00:00+00:00",
        "challenger": {"version": "7", "run_id": "a" * 32, "metrics": metrics,
                       "ci": {m: [0.5, 0.7] for m in metrics}, "training_window": {"start": "x", "end": "y"}},
        "champion": {"version": "6", "run_id": "b" * 32, "metrics": {**metrics, "roc_auc": 0.7},
                     "ci": {m: [0.6, 0.8] for m in metrics}},
        "evaluation_set": {"snapshot_path": "/snap", "snapshot_hash": "c" * 64, "split": "evaluation",
                           "rows": 12000, "positives": 2400, "window": {"start": "a", "end": "b"}},
        "checks": checks,
        "failed": [c["name"] for c in checks if not c["passed"]],
        "advisory_failed": [],
        "warnings": ["the champion v6 trained on part of the evaluation window"],
        "slices": slices,
        "behavioral": behavioral,
        "roc": {"challenger": {"fpr": points, "tpr": points}, "champion": {"fpr": points, "tpr": points}},
        "importance": [{"feature": f"feature_{i}", "importance": 0.01 * i} for i in range(20)],
        "calibration": {"challenger": [{"lo": i / 10, "hi": (i + 1) / 10, "n": 100, "p": 0.1, "y": 0.1}
                                       for i in range(10)]},
        "model_card": {"url": "http://mlflow:5000/#/experiments/1/runs/aaaa/artifacts/gate/model_card.html",
                       "verdict": "s3://mlflow-artifacts/1/aaaa/artifacts/gate/verdict.json"},
        "report_path": str(report_path),
    }


@pytest.fixture
def verdict(tmp_path: Path) -> dict:
    report = tmp_path / "gate_flights_delay_v7.json"
    v = worst_case_verdict(report)
    report.write_text(json.dumps(json_safe(v)))
    return v


def test_the_xcom_summary_is_bounded_with_18_slices_and_3_behavioral_tests(verdict):
    assert len(json.dumps(json_safe(verdict))) > 8 * XCOM_MAX_BYTES  # what used to go to XCom
    summary = xcom_summary(verdict)
    size = len(json.dumps(summary))
    assert size < XCOM_MAX_BYTES == 4096, size
    # what the consumers read
    assert summary["decision"] == "reject" and summary["bootstrap"] is False
    assert summary["challenger"] == {"version": "7", "run_id": "a" * 32, "metrics": verdict["challenger"]["metrics"]}
    assert summary["champion"]["version"] == "6" and summary["champion"]["metrics"]["roc_auc"] == 0.7
    assert summary["evaluation_set"]["rows"] == 12000
    # the headline: the primary metric and every guard metric vs the champion with its interval, and the power
    assert [c["metric"] for c in summary["comparison"]] == ["roc_auc", "log_loss", "brier", "ece"]
    assert summary["comparison"][1] == {"metric": "log_loss", "guard": True, "delta": -0.09,
                                        "ci": [-0.123457, -0.081235], "tolerance": 0.005, "passed": False}
    assert summary["power"] == {"metric": "roc_auc", "mde": 0.017156, "se": 0.006123, "rows": 12000, "power": 0.8}
    assert summary["task"] == "binary"
    assert summary["report_path"] == verdict["report_path"]
    assert summary["verdict_uri"].endswith("/gate/verdict.json") and summary["model_card"]["url"].startswith("http")
    # counts stay exact even where the lists were cut to fit
    failed = [c for c in verdict["checks"] if not c["passed"]]
    assert summary["check_counts"] == {"total": len(verdict["checks"]), "passed": 1, "failed": len(failed),
                                       "advisory_failed": 0}
    assert summary["failed"] == [c["name"] for c in failed][: len(summary["failed"])]
    assert summary["failed_checks"][0] == {"name": "regression.roc_auc", "value": 0.61, "bound": 0.695,
                                           "direction": ">="}
    assert summary["failed_checks"][-1]["value"] is None or len(summary["failed_checks"]) < len(failed)
    for heavy in ("checks", "slices", "behavioral", "roc", "importance", "calibration"):
        assert heavy not in summary


def test_a_passing_verdict_keeps_every_field_and_is_tiny(verdict):
    ok = {**verdict, "decision": "promote", "checks": [dict(c, passed=True) for c in verdict["checks"]],
          "failed": []}
    summary = xcom_summary(ok)
    assert len(json.dumps(summary)) < 2048  # the comparison (primary + 3 guards) and power take ~700 bytes
    assert summary["failed"] == [] and summary["failed_checks"] == [] and summary["check_counts"]["failed"] == 0
    assert failed_checks_summary(summary) == "no failed check"


def test_failed_checks_summary_names_value_bound_and_the_rest(verdict):
    summary = xcom_summary(verdict)
    text = failed_checks_summary(summary)
    assert text.startswith("regression.roc_auc 0.6100 vs bound 0.6950; regression.log_loss 0.6100 vs bound 0.5500")
    rest = summary["check_counts"]["failed"] - len(summary["failed_checks"])
    assert f"; {rest} more (" in text
    # the full verdict gives the same first failures
    assert failed_checks_summary(json_safe(verdict)).startswith("regression.roc_auc 0.6100 vs bound 0.6950")


def test_the_gate_operator_returns_the_summary_and_pushes_the_card_link(verdict, monkeypatch):
    from mlops_provider.hooks.mlflow import MLflowHook
    from mlops_provider.operators.gate import ModelGateOperator
    from mlops_provider.runtime.gate import evaluate

    monkeypatch.setattr(MLflowHook, "configure", lambda self: SimpleNamespace(public=lambda: {"tracking_uri": "x"},
                                                                               ui_url=None))
    pushed: dict = {}
    ti = SimpleNamespace(xcom_push=lambda key, value: pushed.__setitem__(key, value))
    from mlops_provider import specs

    seen: dict = {}

    def fake_gate(model, version, snapshot, gate, training, **kw):
        seen.update(gate=gate, training=training)
        return json_safe(verdict)

    monkeypatch.setattr(evaluate, "evaluate_gate", fake_gate)
    training = specs.TrainingSpec.parse(label="y", features={"categorical": ["origin"], "numeric": ["x"]})
    op = ModelGateOperator(task_id="gate", model_name="flights_delay", challenger_version="7", snapshot="/snap",
                           gate=specs.as_dict(specs.GateSpec()), training=specs.as_dict(training), report_dir="/r")
    out = op.execute({"ti": ti})
    # the templated dicts come back as the dataclasses the runtime takes
    assert seen["gate"] == specs.GateSpec() and seen["training"] == training
    assert out == xcom_summary(verdict) and len(json.dumps(out)) < XCOM_MAX_BYTES
    # links a browser opens (the plugin's routes; the MLflow UI's pages when the connection has one)
    v = verdict["challenger"]["version"]
    assert pushed["model_card_url"].endswith(f"/mlops/models/flights_delay/versions/{v}/card")
    assert pushed["gate_verdict_url"].endswith(f"/mlops/models/flights_delay/versions/{v}/verdict")


def test_promote_and_approval_read_the_summary(verdict):
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops_provider.operators.gate import GateApprovalOperator, PromoteModelOperator

    summary = xcom_summary(verdict)
    op = PromoteModelOperator(task_id="promote", model_name="flights_delay", verdict=json.dumps(summary))
    with pytest.raises(AirflowSkipException, match=r"challenger v7 rejected: regression.roc_auc 0.6100 vs bound"):
        op.execute({})
    strict = PromoteModelOperator(task_id="promote", model_name="flights_delay", verdict=summary,
                                  fail_on_reject=True)
    with pytest.raises(GateRejected) as err:
        strict.execute({})
    assert len(err.value.verdict["checks"]) == len(verdict["checks"])  # the full verdict, read from the report
    Path(verdict["report_path"]).unlink()
    with pytest.raises(GateRejected) as err:
        strict.execute({})
    assert err.value.verdict == summary  # report not on this worker: the summary still says why

    body = GateApprovalOperator.describe({**summary, "decision": "promote"})
    assert "challenger v7 vs @champion v6" in body and "| roc_auc | 0.6100 | 0.7000 |" in body
    assert f"{len(verdict['checks'])} checks" in body and summary["model_card"]["url"] in body
