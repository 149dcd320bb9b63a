"""What the pipelines leave behind, crafted for the UI tests (plain module: tests/ is on sys.path).

:func:`craft_ui_state` writes, under an MLOPS_HOME, an MLflow registry (sqlite) with a promoted champion,
a gate-rejected, a human-rejected and a force-promoted version (tags as the operators write them), the
gate verdict files, the model card artifacts, drift report JSON/HTML, a validation report and a
deployment state.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MODEL = "flights_delay"


def _card(tmp: Path, version: str) -> dict[str, Path]:
    card = tmp / f"card-{version}"
    card.mkdir()
    (card / "model_card.html").write_text(f"<html><body><h1>Model card v{version}</h1></body></html>")
    return {"html": card / "model_card.html"}


def craft_ui_state(home: Path, tmp: Path) -> dict[str, Any]:
    from mlflow import MlflowClient

    (home / "mlflow").mkdir()
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment(MODEL, artifact_location=(home / "mlflow" / "artifacts").as_uri())
    client.create_registered_model(MODEL)
    reports = home / "reports" / MODEL
    for d in ("gate", "drift", "validation"):
        (reports / d).mkdir(parents=True)
    plans = {
        "1": ("promote", {"roc_auc": 0.70, "log_loss": 0.55}, {"gate.promoted_at": "2026-01-01T00:00:00+00:00",
                                                               "gate.promoted_by": "flights_delay__training/r1"}),
        "2": ("reject", {"roc_auc": 0.62, "log_loss": 0.60}, {}),
        "3": ("promote", {"roc_auc": 0.72, "log_loss": 0.54},
              {"mlops.approval.decision": "rejected", "mlops.approval.by": "alice",
               "mlops.approval.at": "2026-01-03T00:00:00+00:00", "mlops.approval.comment": "too risky on JFK"}),
        "4": ("promote", {"roc_auc": 0.73, "log_loss": 0.53},
              {"mlops.force_promote.reason": "signature change", "mlops.force_promote.actor": "bob",
               "mlops.force_promote.at": "2026-01-04T00:00:00+00:00"}),
    }
    runs = {}
    for version, (decision, metrics, extra) in plans.items():
        run = client.create_run(exp)
        runs[version] = run.info.run_id
        client.log_metric(run.info.run_id, "val_roc_auc", metrics["roc_auc"])
        client.log_artifact(run.info.run_id, str(_card(tmp, version)["html"]), "gate")
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(MODEL, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        assert str(mv.version) == version
        checks = [{"name": "roc_auc.floor", "value": metrics["roc_auc"], "bound": 0.65, "direction": ">=",
                   "passed": metrics["roc_auc"] >= 0.65, "enforced": True, "kind": "floor"},
                  {"name": "ece.max", "value": 0.2, "bound": 0.1, "direction": "<=", "passed": False,
                   "enforced": False, "kind": "calibration"}]
        verdict = {"model": MODEL, "decision": decision, "challenger": {"version": version, "metrics": metrics},
                   "champion": None, "checks": checks, "evaluated_at": f"2026-01-0{version}T00:00:00+00:00"}
        path = reports / "gate" / f"gate_{MODEL}_v{version}.json"
        path.write_text(json.dumps(verdict))
        tags = {"gate.decision": decision, "gate.report_path": str(path),
                "gate.failed": "none" if decision == "promote" else "roc_auc.floor",
                "gate.checks": "1/2 passed", **{f"gate.{k}": f"{v:.6f}" for k, v in metrics.items()}, **extra}
        for k, v in tags.items():
            client.set_model_version_tag(MODEL, version, k, v)
    client.set_registered_model_alias(MODEL, "champion", "4")
    client.set_registered_model_alias(MODEL, "previous", "1")
    for i, (share, drifted) in enumerate([(0.1, False), (0.4, True)]):
        stem = f"drift__{MODEL}__v1__2026-01-0{i + 1}T00_00_00__2026-01-0{i + 2}T00_00_00"
        summary = {"model": MODEL, "model_version": "1", "status": "ok", "drift": drifted, "share": share,
                   "threshold": 0.3, "n_current": 500,
                   "window": {"start": f"2026-01-0{i + 1}T00:00:00", "end": f"2026-01-0{i + 2}T00:00:00"},
                   "columns": {"temp": {"score": 0.05 + share, "drifted": drifted, "method": "psi",
                                        "stattest_threshold": 0.2},
                               "distance": {"score": 0.02, "drifted": False, "method": "psi",
                                            "stattest_threshold": 0.2}},
                   "performance": {"status": "ok", "overall": {"roc_auc": 0.7 - share / 10, "n": 400}}}
        (reports / "drift" / f"{stem}.json").write_text(json.dumps({"summary": summary, "evidently": None}))
        (reports / "drift" / f"{stem}.html").write_text(f"<html><body>drift report {i}</body></html>")
    (reports / "validation" / "landing__manual__1.html").write_text("<html><body>all rules hold</body></html>")
    (reports / "validation" / "landing__manual__1.json").write_text(json.dumps({"passed": True}))
    state = home / "state" / "serving" / MODEL
    state.mkdir(parents=True)
    (state / "deployment.json").write_text(json.dumps({"url": "http://127.0.0.1:9", "bento_tag": "x:1"}))
    return {"home": home, "runs": runs, "reports": reports, "client": client, "experiment": exp}
