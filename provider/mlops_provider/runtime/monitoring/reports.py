"""Drift report files: their idempotent names, the HTML/JSON writer, publishing to ``s3://`` and the
small XCom summary of a monitor run (runtime module)."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from evidently.core.report import Snapshot

from mlops_provider.runtime.io import objstore
from mlops_provider.runtime.io.atomic import atomic_write
from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.monitoring.drift import _float

log = logging.getLogger(__name__)

_STEM_SAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def report_stem(model: str, model_version: str | int | None, start: str | None, end: str | None) -> str:
    """Idempotent file stem for one (model, version, window): the same inputs give the same name."""
    parts = [
        "drift",
        model,
        f"v{model_version}" if model_version not in (None, "") else "vNA",
        start or "begin",
        end or "end",
    ]
    return _STEM_SAFE.sub("_", "__".join(str(p) for p in parts)).strip("_")



def write_report(
    snapshot: Snapshot | None,
    out_dir: str | os.PathLike[str],
    stem: str,
    summary: dict[str, Any] | None = None,
) -> dict[str, str | None]:
    """Write ``<out_dir>/<stem>.html`` (Evidently report) and ``<stem>.json`` atomically.

    The JSON holds ``{"summary": summary, "evidently": snapshot.dict()}``. With ``snapshot=None``
    (no traffic / too few rows) only the JSON summary is written and ``html`` is ``None``.
    Re-running with the same stem replaces the files (same name, same content up to widget ids).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path: Path | None = None
    evidently_dict: dict[str, Any] | None = None
    if snapshot is not None:
        html_path = out / f"{stem}.html"
        html = snapshot.get_html_str(as_iframe=False)
        if summary:
            head, sep, tail = html.partition("<body>")
            html = f"{head}{sep}{summary_html(summary)}{tail}" if sep else summary_html(summary) + html
        atomic_write(html_path, html)
        evidently_dict = json.loads(snapshot.json())
    json_path = out / f"{stem}.json"
    payload = {"summary": summary, "evidently": evidently_dict}
    atomic_write(json_path, json.dumps(payload, indent=2, sort_keys=True, default=str))
    log.info("Wrote drift report %s%s", json_path, f" and {html_path}" if html_path else "")
    return {"html": str(html_path) if html_path else None, "json": str(json_path)}



def summary_html(result: Mapping[str, Any]) -> str:
    """A compact HTML table of the verdict (prepended to Evidently's report)."""
    from html import escape

    rows = []
    for col, info in (result.get("columns") or {}).items():
        exact = info.get("psi") if info.get("kind") == "numeric" else info.get("js_distance")
        checks = info.get("calibrated") or {}
        calibrated = "; ".join(
            f"{k} {_fmt(v.get('value'))} / {_fmt(v.get('threshold'))}{' ALARM' if v.get('alarm') else ''}"
            for k, v in checks.items()
        )
        rows.append(
            "<tr>"
            + "".join(
                f"<td>{escape(str(v))}</td>"
                for v in (
                    col,
                    info.get("method"),
                    _fmt(info.get("score")),
                    info.get("stattest_threshold"),
                    "DRIFT" if info.get("drifted") else "",
                    _fmt(exact),
                    _fmt(info.get("unseen_share")),
                    _fmt(info.get("null_share")),
                    calibrated or "-",
                )
            )
            + "</tr>"
        )
    perf = result.get("performance") or {}
    perf_line = ""
    if perf:
        overall = perf.get("overall") or {}
        det = detector_summary(perf.get("detector")) or {}
        metric = (perf.get("detector") or {}).get("metric") or "roc_auc"
        days = "".join(
            f"<tr><td>{escape(str(d['day']))}</td><td>{d['n']}</td><td>{d['labelled']}</td>"
            f"<td>{_fmt(d['realized'])}</td><td>{_fmt(d['estimated'])}</td>"
            "</tr>"
            for d in daily_summary(perf.get("daily"), metric)
        )
        shown = ", ".join(f"{k} {_fmt(overall.get(k))}" for k in task_metric_names(perf) if k in overall)
        perf_line = (
            f"<p>Live performance ({escape(str(perf.get('status')))}, {escape(str(_task_name(perf)))}): "
            f"{escape(shown)} on {overall.get('n', 0)} labelled rows; degraded={perf.get('degraded')} "
            f"(decided by {escape(str(perf.get('decided_by')))})</p>"
            f"<p>Detector: {escape(json.dumps(det, default=str))}</p>"
            + ("<table border=1 cellpadding=3><tr><th>day</th><th>requests</th><th>labelled</th>"
               f"<th>realized {escape(metric)}</th><th>estimated {escape(metric)}</th></tr>{days}</table>"
               if days else "")
        )
    preds = result.get("prediction_drift") or {}
    if preds:
        perf_line += (
            f"<p>Prediction drift ({escape(str(preds.get('status')))}, {escape(str(preds.get('thresholds')))} "
            f"thresholds): {'DRIFT' if preds.get('drift') else 'no drift'} "
            f"{escape(str(preds.get('drifted_columns') or ''))} {escape(str(preds.get('why') or ''))}</p>"
            + "".join(f"<p>{escape(str(a))}</p>" for a in preds.get("alarms") or [])
        )
    return (
        "<div style='font-family:sans-serif;margin:1em'><h2>Drift verdict: "
        f"{'DRIFT' if result.get('drift') else 'no drift'} ({escape(str(result.get('status')))})</h2>"
        f"<p>model {escape(str(result.get('model')))} v{escape(str(result.get('model_version')))}, window "
        f"{escape(str(result.get('window')))}; {result.get('n_current')} rows (sample {result.get('n_sample')}); "
        f"share {_fmt(result.get('share'))} / threshold {result.get('threshold')}; reasons "
        f"{escape(str(result.get('reasons')))}; thresholds {escape(json.dumps(result.get('calibration'), default=str))}"
        "</p>"
        + "".join(f"<p>{escape(str(a))}</p>" for a in result.get("alarms") or [])
        + f"{perf_line}"
        "<table border=1 cellpadding=3><tr><th>feature</th><th>method</th><th>score (sample)</th><th>threshold</th>"
        "<th>verdict</th><th>PSI / JS (full window)</th><th>unseen share</th><th>null share</th>"
        "<th>calibrated checks (value / threshold)</th></tr>"
        + "".join(rows)
        + "</table></div>"
    )


def _fmt(v: Any) -> str:
    f = _float(v)
    return "-" if f is None else f"{f:.4g}"


def publish_reports(
    paths: Mapping[str, str | None], report_dir: str, *, store: ObjectStore | None = None
) -> dict[str, str | None]:
    """Copy locally written reports to ``report_dir`` when it is ``s3://`` (through ``store``); returns
    the final locations."""
    if not objstore.is_s3(report_dir):
        return dict(paths)
    store = store or objstore.DEFAULT_STORE
    out: dict[str, str | None] = {}
    for kind, local in paths.items():
        if not local:
            out[kind] = None
            continue
        url = objstore.join_s3(report_dir, Path(local).name)
        store.upload(local, url)
        out[kind] = url
    log.info("Uploaded drift reports to %s", report_dir)
    return out


# ------------------------------------------------------------------------------------- small XCom
#: What a monitor run puts in XCom: ids, the decision and its headline numbers. Per-feature details
#: (``columns``, ``skipped_columns``, ``methods``) and the per-day / per-slice performance tables stay in
#: the report files (``report``).
XCOM_KEYS = (
    "model", "model_version", "reference_alias", "snapshot_path", "status", "drift", "trigger", "reasons",
    "trigger_reasons", "signals", "share", "threshold", "drifted_columns", "n_reference", "n_reference_total",
    "n_current", "n_sample", "sampled", "window", "min_rows", "reference_cache_hit", "mlflow_logged", "report",
    "calibration", "traffic_excluded",
)
XCOM_PERFORMANCE_KEYS = (
    "status", "degraded", "decided_by", "reasons", "window", "n_requests", "n_labelled", "label_coverage",
    "baseline", "roc_auc_drop", "log_loss_increase", "join_keys", "cbpe",
)
XCOM_METRICS = ("n", "roc_auc", "log_loss", "brier", "ece")
#: the headline metrics per task (XCom, HTML)
TASK_XCOM_METRICS = {
    "binary": XCOM_METRICS,
    "multiclass": ("n", "log_loss", "accuracy", "macro_f1", "ece"),
    "regression": ("n", "rmse", "mae", "r2", "bias"),
}
XCOM_PREDICTION_DRIFT = ("status", "drift", "trigger", "task", "drifted_columns", "thresholds", "n_current", "why")
XCOM_DETECTOR = ("series", "method", "metric", "status", "alarm", "alarm_day", "statistic", "limit", "why")
#: at most this many per-feature alarm lines in XCom (all of them are in the report)
XCOM_ALARMS = 10


def _task_name(perf: Mapping[str, Any]) -> str:
    task = perf.get("task")
    return str((task or {}).get("task") if isinstance(task, Mapping) else (task or "binary"))


def task_metric_names(perf: Mapping[str, Any]) -> tuple[str, ...]:
    """The headline metrics of a performance report's task."""
    return TASK_XCOM_METRICS.get(_task_name(perf), XCOM_METRICS)


def _r(v: Any) -> Any:
    return round(v, 4) if isinstance(v, float) else v


def detector_summary(det: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The detector's state without its per-day path (that is in the report)."""
    if not det:
        return None
    out: dict[str, Any] = {k: _r(det.get(k)) for k in XCOM_DETECTOR if k in det}
    cal = det.get("calibration") or {}
    if cal:
        out["reference"] = {k: _r(cal.get(k)) for k in ("status", "mean", "std", "reference_days", "k", "h") if k in cal}
    if det.get("estimated"):
        out["estimated"] = detector_summary(det["estimated"])
    return out


def daily_summary(daily: Any, metric: str = "roc_auc") -> list[dict[str, Any]]:
    """Per day: requests, labelled requests, realized and estimated ``metric`` (rounded; every metric of
    every day is in the report)."""
    out = []
    for d in daily or []:
        real, est = d.get("realized") or {}, d.get("estimated") or {}
        out.append({"day": d.get("day"), "n": d.get("n"), "labelled": d.get("labelled"),
                    "realized": _r(real.get(metric)), "estimated": _r(est.get(metric))})
    return out


def xcom_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """The small XCom of a :func:`~mlops_provider.runtime.monitoring.monitor.run_monitor` result."""
    out: dict[str, Any] = {k: result[k] for k in XCOM_KEYS if k in result}
    if result.get("alarms"):
        out["alarms"] = list(result["alarms"])[:XCOM_ALARMS]
    perf = result.get("performance")
    if perf:
        small: dict[str, Any] = {k: perf[k] for k in XCOM_PERFORMANCE_KEYS if k in perf}
        overall = perf.get("overall") or {}
        small["task"] = _task_name(perf)
        small["overall"] = {k: overall.get(k) for k in task_metric_names(perf)} if overall else None
        if perf.get("drops"):
            small["drops"] = {k: _r(v) for k, v in perf["drops"].items()}
        small["estimated"] = {k: _r(v) for k, v in (perf.get("estimated") or {}).items() if k != "window"} or None
        metric = (perf.get("detector") or {}).get("metric") or "roc_auc"
        small["daily_metric"] = metric
        small["daily"] = daily_summary(perf.get("daily"), metric)
        small["detector"] = detector_summary(perf.get("detector"))
        exp = perf.get("experiment") or {}
        small["experiment"] = (
            {k: exp.get(k) for k in ("mode", "winner", "decided_by", "delta_roc_auc", "delta", "confidence")}
            if exp else None
        )
        out["performance"] = small
    else:
        out["performance"] = perf
    preds = result.get("prediction_drift")
    out["prediction_drift"] = {k: preds[k] for k in XCOM_PREDICTION_DRIFT if k in preds} | (
        {"alarms": list(preds.get("alarms") or [])[:XCOM_ALARMS]} if preds.get("alarms") else {}) if preds else None
    if result.get("task"):
        out["task"] = result["task"]
    return json.loads(json.dumps(out, default=str))
