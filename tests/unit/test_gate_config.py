"""Gate YAML keys: validation errors name the key; the factory wires gate, approval, pool and manual DAGs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mlops_provider.config import load_config
from mlops_provider.exceptions import ConfigError
from mlops_provider.factory import build_dags

REPO = Path(__file__).resolve().parents[2]


def write_cfg(tmp_path: Path, training: dict | None = None, **gate) -> Path:
    data = yaml.safe_load((REPO / "dags" / "flights_delay.yaml").read_text())
    data["gate"].update(gate)
    data["training"].update(training or {})
    if not (tmp_path / "feature_repo").exists():
        shutil.copytree(
            REPO / "feature_repo",
            tmp_path / "feature_repo",
            ignore=shutil.ignore_patterns("__pycache__", "data"),
        )
        (tmp_path / "dags").mkdir()
    path = tmp_path / "dags" / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_metric_names_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"key 'gate.floors'.*'f1' is not a metric of task binary; valid: "
                                          r"\['brier', 'ece', 'log_loss', 'pr_auc', 'roc_auc'\]"):
        load_config(write_cfg(tmp_path, floors={"f1": 0.5}))
    with pytest.raises(ConfigError, match="key 'gate.slices.0.metric'.*'accuracy' is not a metric of task binary"):
        load_config(write_cfg(tmp_path, slices=[{"column": "origin", "metric": "accuracy"}]))
    with pytest.raises(ConfigError, match="key 'gate.guard_metrics'.*'mae' is not a metric of task binary"):
        load_config(write_cfg(tmp_path, guard_metrics=["mae"]))


def test_metrics_are_the_tasks_and_defaults_follow_the_task(tmp_path: Path) -> None:
    multiclass = {"task": "multiclass", "classes": ["a", "b", "c"]}
    bare = {"primary_metric": None, "floors": None, "max_regression": None, "behavioral": [], "calibration": None}
    cfg = load_config(write_cfg(tmp_path, training=multiclass, slices=[], **bare))
    g = cfg.gate
    assert (g.primary_metric, g.guard_metrics, g.floors, g.max_regression) == (
        "log_loss", ["log_loss", "ece"], {}, {"log_loss": 0.005})
    cfg = load_config(write_cfg(tmp_path, training=multiclass, slices=[], floors={"recall_b": 0.3}, **{
        k: v for k, v in bare.items() if k != "floors"}))
    assert cfg.gate.floors == {"recall_b": 0.3}
    with pytest.raises(ConfigError, match=r"'recall_z' is not a metric of task multiclass; valid: .*'recall_a'"):
        load_config(write_cfg(tmp_path, training=multiclass, slices=[], floors={"recall_z": 0.3},
                              **{k: v for k, v in bare.items() if k != "floors"}))
    regression = {"task": "regression", "label": "arr_delay", "quantiles": [0.1, 0.9]}
    cfg = load_config(write_cfg(tmp_path, training=regression, slices=[], **bare))
    assert (cfg.gate.primary_metric, cfg.gate.guard_metrics, cfg.gate.floors) == ("rmse", ["mae"], {})
    cfg = load_config(write_cfg(tmp_path, training=regression, slices=[], guard_metrics=["mae", "pinball_0.9"],
                                **bare))
    assert cfg.gate.guard_metrics == ["mae", "pinball_0.9"]
    with pytest.raises(ConfigError, match=r"'roc_auc' is not a metric of task regression; valid: "
                                          r"\['mae', 'pinball_0.1', 'pinball_0.9', 'r2', 'rmse'\]"):
        load_config(write_cfg(tmp_path, training=regression, slices=[], **{**bare, "floors": {"roc_auc": 0.5}}))
    with pytest.raises(ConfigError, match="key 'gate.calibration'.*regression model has no probabilities"):
        load_config(write_cfg(tmp_path, training=regression, slices=[],
                              **{**bare, "calibration": {"max_ece": 0.1}}))
    with pytest.raises(ConfigError, match="key 'training.search.metric'.*'pr_auc' is not a binary training metric"):
        load_config(write_cfg(tmp_path, training={"search": {"params": {"learning_rate": [0.001]},
                                                             "metric": "pr_auc"}}))


def test_task_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="key 'training.classes'.*with two classes use task: binary"):
        load_config(write_cfg(tmp_path, training={"task": "multiclass", "classes": ["a", "b"]}))
    with pytest.raises(ConfigError, match="key 'training.classes'.*only a multiclass task"):
        load_config(write_cfg(tmp_path, training={"classes": ["a", "b", "c"]}))
    with pytest.raises(ConfigError, match="key 'training.quantiles'.*ascending"):
        load_config(write_cfg(tmp_path, training={"task": "regression", "quantiles": [0.9, 0.1]}, slices=[],
                              behavioral=[], calibration=None, floors=None, max_regression=None))
    with pytest.raises(ConfigError, match="key 'training.calibration'.*Platt scaling is binary"):
        load_config(write_cfg(tmp_path, training={"task": "multiclass", "calibration": "platt"}))


def test_behavioral_tests_need_their_fields(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="directional needs expect"):
        load_config(
            write_cfg(
                tmp_path, behavioral=[{"name": "p", "kind": "directional", "column": "precip", "add": 0.1}]
            )
        )
    with pytest.raises(ConfigError, match="exactly one of 'set', 'add', 'values'"):
        load_config(
            write_cfg(tmp_path, behavioral=[{"name": "p", "kind": "invariance", "column": "distance"}])
        )
    with pytest.raises(ConfigError, match="minimum_functionality needs 'cases'"):
        load_config(write_cfg(tmp_path, behavioral=[{"name": "p", "kind": "minimum_functionality"}]))
    with pytest.raises(ConfigError, match="repeated: \\['a'\\]"):
        twice = {"name": "a", "kind": "invariance", "column": "distance", "set": 1.0}
        load_config(write_cfg(tmp_path, behavioral=[twice, twice]))


def test_a_behavioral_test_must_name_a_model_input_and_the_tasks_expectation(tmp_path: Path) -> None:
    # tailnum is a snapshot column but no model input: changing it can never change the prediction
    with pytest.raises(ConfigError, match="key 'gate.behavioral.0'.*'tailnum' is not a model input"):
        load_config(write_cfg(tmp_path, behavioral=[
            {"name": "tail", "kind": "invariance", "column": "tailnum", "values": ["N1", "N2"]}]))
    case = {"name": "c", "input": {"tailnum": "N1"}, "max_probability": 0.5}
    with pytest.raises(ConfigError, match=r"case 'c' sets \['tailnum'\], which are not model inputs"):
        load_config(write_cfg(tmp_path, behavioral=[{"name": "m", "kind": "minimum_functionality",
                                                     "cases": [case]}]))
    regression = {"task": "regression", "label": "arr_delay"}
    bare = {"slices": [], "calibration": None, "floors": None, "max_regression": None, "primary_metric": None}
    with pytest.raises(ConfigError, match=r"case 'c' sets \['max_probability'\].*use \['max_value', 'min_value'\]"):
        load_config(write_cfg(tmp_path, training=regression, **bare, behavioral=[
            {"name": "m", "kind": "minimum_functionality",
             "cases": [{"name": "c", "input": {"precip": 0.5}, "max_probability": 0.5}]}]))
    cfg = load_config(write_cfg(tmp_path, training=regression, **bare, behavioral=[
        {"name": "m", "kind": "minimum_functionality",
         "cases": [{"name": "c", "input": {"precip": 0.5}, "min_value": 0.0, "max_value": 120.0}]}]))
    assert cfg.gate.behavioral[0].cases[0].max_value == 120.0
    multiclass = {"task": "multiclass", "label": "delay_class", "classes": ["early", "on_time", "late"]}
    with pytest.raises(ConfigError, match="needs target_class"):
        load_config(write_cfg(tmp_path, training=multiclass, **bare, behavioral=[
            {"name": "d", "kind": "directional", "column": "precip", "add": 0.1, "expect": "not_lower"}]))
    with pytest.raises(ConfigError, match="case 'c' needs expect_class"):
        load_config(write_cfg(tmp_path, training=multiclass, **bare, behavioral=[
            {"name": "m", "kind": "minimum_functionality",
             "cases": [{"name": "c", "input": {"precip": 0.5}, "min_probability": 0.5}]}]))
    with pytest.raises(ConfigError, match="expects class 'never', not one of training.classes"):
        load_config(write_cfg(tmp_path, training=multiclass, **bare, behavioral=[
            {"name": "m", "kind": "minimum_functionality",
             "cases": [{"name": "c", "input": {"precip": 0.5}, "expect_class": "never"}]}]))


def test_example_yaml_gate_is_wired_into_the_training_dag() -> None:
    cfg = load_config(REPO / "dags" / "flights_delay.yaml")
    assert cfg.training.evaluation_days == 7
    dags = build_dags(cfg)
    train = dags["flights_delay__training"]
    assert train.get_task("training_dataset").evaluation_days == 7
    gate = train.get_task("gate")
    assert {s["column"] for s in gate.gate["slices"]} == {"origin", "carrier"}
    assert {b["kind"] for b in gate.gate["behavioral"]} == {"invariance", "directional", "minimum_functionality"}
    assert {b["column"] for b in gate.gate["behavioral"] if b["column"]} <= set(cfg.training.features.all)
    assert gate.gate["calibration"]["max_ece"] == 0.25 and gate.gate["latency"]["max_ms"] == 2000
    assert [link.name for link in gate.operator_extra_links] == ["Model card", "Gate verdict"]
    promote = train.get_task("promote")
    assert promote.pool == "mlops_promote_flights_delay" and "gate" in promote.upstream_task_ids
    assert [a.name for a in promote.outlets] == ["mlflow/flights_delay@champion"]
    assert "approve_promotion" not in train.task_ids


def test_approval_step_sits_between_gate_and_promote(tmp_path: Path) -> None:
    from airflow.providers.standard.operators.hitl import ApprovalOperator

    cfg = load_config(write_cfg(tmp_path, approval=True, approval_timeout_hours=24, promote_pool=None))
    train = build_dags(cfg)["flights_delay__training"]
    approve = train.get_task("approve_promotion")
    assert isinstance(approve, ApprovalOperator)
    # promote also reads the gate's XCom; a skipped / rejected approval skips it (all_success)
    assert (
        approve.upstream_task_ids == {"gate"}
        and "approve_promotion" in train.get_task("promote").upstream_task_ids
    )
    assert train.get_task("promote").trigger_rule == "all_success"
    assert approve.response_timeout.total_seconds() == 24 * 3600 and approve.defaults == ["Reject"]
    assert train.get_task("promote").pool == "default_pool"


def test_manual_dags_have_forms_requiring_a_reason() -> None:
    cfg = load_config(REPO / "dags" / "flights_delay.yaml")
    dags = build_dags(cfg)
    for action in ("force_promote", "rollback"):
        dag = dags[f"flights_delay__{action}"]
        assert dag.schedule is None and dag.max_active_runs == 1
        (task,) = dag.tasks
        assert task.task_id == action and task.action == action
        assert task.pool == "mlops_promote_flights_delay"
        assert [a.name for a in task.outlets] == ["mlflow/flights_delay@champion"]
        reason = dag.params.get_param("reason")
        assert reason.schema["type"] == "string" and reason.schema["minLength"] == 3
        with pytest.raises(Exception):  # noqa: B017,PT011 - no reason: the form refuses the run
            dag.params.validate()
    assert dags["flights_delay__force_promote"].params.get_param("version").schema["type"] == "integer"
    assert dags["flights_delay__rollback"].params.get_param("version").value is None  # empty = @previous


def test_approval_body_shows_the_verdict_and_card() -> None:
    from mlops_provider.operators.gate import GateApprovalOperator

    body = GateApprovalOperator.describe(
        {
            "decision": "promote",
            "challenger": {"version": "3", "metrics": {"roc_auc": 0.71}},
            "champion": {"version": "2", "metrics": {"roc_auc": 0.70}},
            "checks": [{}, {}],
            "failed": [],
            "model_card": {"url": "http://mlflow/card"},
            "report_path": "/r.json",
        }
    )
    assert "challenger v3 vs @champion v2" in body and "| roc_auc | 0.7100 | 0.7000 |" in body
    assert "http://mlflow/card" in body


def test_approval_skips_when_the_gate_rejected() -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops_provider.operators.gate import GateApprovalOperator

    op = GateApprovalOperator(
        task_id="approve_promotion",
        model_name="m",
        verdict='{"decision": "reject", "challenger": {"version": "4"}}',
    )
    with pytest.raises(AirflowSkipException, match="nothing to approve"):
        op.execute({})
