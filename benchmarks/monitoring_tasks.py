"""The monitor's signals per task type on synthetic traffic: false alarms and detection (multiclass, regression).

Traffic: ``--rows`` requests a day with one feature x ~ N(0, 1) (plus a segment); multiclass outcomes drawn from
three softmax classes of x (the served probabilities are the true ones: calibrated), regression outcomes
3 x + N(0, 1) (served: 3 x, with the 10 % / 90 % quantiles). The champion's reference is ``--ref-days`` held-out
days; the live days are ``--live-days`` in control. Measured, through the monitor's own functions:

1. **detector**: the CUSUM on the task's primary metric (multiclass log loss, regression RMSE; defaults: shift 0.04
   for log loss, one reference standard deviation for RMSE) calibrated on the reference days - its false-alarm rate
   over ``--replicates`` fresh (reference, live) pairs (asked: 5 % within 30 days), and the first alarm day of a
   sustained decline from day 1 (multiclass: a tenth of the requests answered at random, daily log loss +0.05;
   regression: a bias of 0.3, daily RMSE +0.045 - about one daily standard deviation each);
2. **prediction drift**: the served predictions' daily verdict (thresholds calibrated on the reference days) - its
   false-alarm rate on in-control days, and whether the decline above is seen on its first day;
3. **CBPE** (multiclass): mean |estimated - realized| daily accuracy and log loss.

    python benchmarks/monitoring_tasks.py [--replicates 200] [--rows 300]

The last line is ``RESULT monitoring_tasks ...``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mlops_provider.runtime.monitoring import detector as det
from mlops_provider.runtime.monitoring.drift import DriftRules, evaluate_drift
from mlops_provider.runtime.monitoring.predictions import prediction_rules, reference_stats
from mlops_provider.runtime.monitoring.statistics import stream_current
from mlops_provider.runtime.monitoring.task_metrics import MonitorTask
from mlops_provider.runtime.monitoring.window import frame_window

CLASSES = ["a", "b", "c"]
W = np.array([[2.0, -1.0], [0.0, 1.5], [-2.0, -0.5]])
START = pd.Timestamp("2024-01-01", tz="UTC")
#: the sustained decline: multiclass, the share of requests answered at random; regression, a bias (label units)
DECLINE = {"multiclass": 0.1, "regression": 0.3}
TASKS = {
    "multiclass": {"mlops.task": "multiclass", "mlops.classes": json.dumps(CLASSES)},
    "regression": {"mlops.task": "regression", "mlops.quantiles": "[0.1, 0.9]"},
}


def day_frame(task: MonitorTask, day: int, rows: int, rng: np.random.Generator, broken: float = 0.0
              ) -> tuple[pd.DataFrame, np.ndarray]:
    """(score columns + timestamp, outcomes) of one day; ``broken``: the decline's size (see the docstring)."""
    x = rng.normal(0, 1, rows)
    ts = START + pd.Timedelta(days=day) + pd.to_timedelta(np.sort(rng.integers(0, 86_400, rows)), unit="s")
    if task.name == "multiclass":
        z = np.c_[x, np.ones(rows)] @ W.T
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        y = np.array(CLASSES)[(p.cumsum(1) > rng.random((rows, 1))).argmax(1)]
        served = p.copy()
        if broken:
            hit = rng.random(rows) < broken
            served[hit] = rng.dirichlet([1, 1, 1], int(hit.sum()))
        out = served
    else:
        y = 3 * x + rng.normal(0, 1, rows)
        point = 3 * x + broken
        out = np.c_[point, point - 1.2816, point + 1.2816]
    scores = task.scores_from_output(out)
    scores["timestamp"] = ts
    return scores, y


def daily_value(task: MonitorTask, scores: pd.DataFrame, y: np.ndarray) -> float:
    return task.realized(task.labels(pd.Series(y)), scores)[task.primary]


def detector_section(task: MonitorTask, args: argparse.Namespace) -> dict:
    settings, _ = det.DetectorSettings.for_task(None, task.metrics, task.primary)
    rng = np.random.default_rng(0)
    alarms, first_days = 0, []
    broken = DECLINE[task.name]
    for _ in range(args.replicates):
        ref = [daily_value(task, *day_frame(task, d, args.rows, rng)) for d in range(args.ref_days)]
        cal = det.calibrate(ref, settings)
        live = [{"day": f"d{d:03d}", "n": args.rows, "value": daily_value(task, *day_frame(task, d, args.rows, rng))}
                for d in range(args.live_days)]
        alarms += det.run(live, cal, settings)["alarm_day"] is not None
        bad = [{"day": f"d{d:03d}", "n": args.rows,
                "value": daily_value(task, *day_frame(task, d, args.rows, rng, broken=broken))}
               for d in range(args.live_days)]
        first = det.run(bad, cal, settings)["alarm_day"]
        first_days.append(int(first[1:]) + 1 if first else None)
    found = [d for d in first_days if d is not None]
    return {"false_alarm_rate": alarms / args.replicates, "detected": len(found) / args.replicates,
            "median_detection_day": float(np.median(found)) if found else None, "shift": settings.shift_for(1.0)
            if task.name == "multiclass" else "1 reference std"}


def prediction_drift_section(task: MonitorTask, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(1)
    ref = pd.concat([day_frame(task, d, args.rows, rng)[0] for d in range(args.ref_days)], ignore_index=True)
    scored = ref.rename(columns={"timestamp": "event_timestamp"}).assign(split="validation")
    rules = DriftRules(window_hours=24.0)
    numeric, categorical = task.drift_columns()
    with tempfile.TemporaryDirectory() as tmp:
        stats, _ = reference_stats(scored, task, rules, model="bench", version="1", cache_dir=None)

        def judge(scores: pd.DataFrame, i: int) -> bool:
            cur_frame = task.drift_frame(scores).assign(timestamp=scores["timestamp"].to_numpy())
            cur = stream_current(frame_window(cur_frame, Path(tmp) / str(i)), stats, numeric, categorical)
            result, _ = evaluate_drift(stats, cur, numeric, categorical, prediction_rules(rules))
            return bool(result["drift"])

        clean = [judge(day_frame(task, 100 + d, args.rows, rng)[0], d) for d in range(args.drift_days)]
        broken = DECLINE[task.name]
        bad = [judge(day_frame(task, 500 + d, args.rows, rng, broken=broken)[0], 1000 + d) for d in range(10)]
    cal = stats.calibration or {}
    return {"false_alarm_rate": float(np.mean(clean)), "days": len(clean), "decline_seen_on_day": float(np.mean(bad)),
            "calibration": cal.get("status"), "chunks": cal.get("n_chunks")}


def cbpe_section(task: MonitorTask, args: argparse.Namespace) -> dict:
    rng = np.random.default_rng(2)
    err: dict[str, list[float]] = {"accuracy": [], "log_loss": [], "macro_f1": []}
    for d in range(args.live_days):
        scores, y = day_frame(task, d, args.rows, rng)
        real, est = task.realized(task.labels(pd.Series(y)), scores), task.expected(scores) or {}
        for k in err:
            err[k].append(abs(est[k] - real[k]))
    return {f"mean_abs_error_{k}": float(np.mean(v)) for k, v in err.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--rows", type=int, default=300)
    ap.add_argument("--ref-days", type=int, default=15)
    ap.add_argument("--live-days", type=int, default=30)
    ap.add_argument("--drift-days", type=int, default=100)
    args = ap.parse_args()
    t0 = time.perf_counter()
    out: dict[str, dict] = {}
    for name, tags in TASKS.items():
        task = MonitorTask.from_tags(tags)
        res = {"detector": detector_section(task, args), "prediction_drift": prediction_drift_section(task, args)}
        if task.has_cbpe:
            res["cbpe"] = cbpe_section(task, args)
        out[name] = res
        print(f"{name} (primary {task.primary}): {json.dumps(res, default=str)}  [{time.perf_counter() - t0:.0f} s]",
              flush=True)
    mc, rg = out["multiclass"], out["regression"]
    print(
        "RESULT monitoring_tasks "
        f"mc_detector_far={mc['detector']['false_alarm_rate']:.3f} mc_detected={mc['detector']['detected']:.2f} "
        f"mc_detection_day={mc['detector']['median_detection_day']} "
        f"mc_pred_far={mc['prediction_drift']['false_alarm_rate']:.3f} "
        f"mc_cbpe_acc_err={mc['cbpe']['mean_abs_error_accuracy']:.4f} "
        f"reg_detector_far={rg['detector']['false_alarm_rate']:.3f} reg_detected={rg['detector']['detected']:.2f} "
        f"reg_detection_day={rg['detector']['median_detection_day']} "
        f"reg_pred_far={rg['prediction_drift']['false_alarm_rate']:.3f} "
        f"reg_pred_decline_day1={rg['prediction_drift']['decline_seen_on_day']:.2f} "
        f"seconds={time.perf_counter() - t0:.0f}"
    )


if __name__ == "__main__":
    main()
