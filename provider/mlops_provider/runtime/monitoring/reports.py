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
                )
            )
            + "</tr>"
        )
    perf = result.get("performance") or {}
    perf_line = ""
    if perf:
        overall = perf.get("overall") or {}
        perf_line = (
            f"<p>Live performance ({escape(str(perf.get('status')))}): ROC AUC {_fmt(overall.get('roc_auc'))}, "
            f"log loss {_fmt(overall.get('log_loss'))}, ECE {_fmt(overall.get('ece'))} on "
            f"{overall.get('n', 0)} labelled rows; degraded={perf.get('degraded')}</p>"
        )
    return (
        "<div style='font-family:sans-serif;margin:1em'><h2>Drift verdict: "
        f"{'DRIFT' if result.get('drift') else 'no drift'} ({escape(str(result.get('status')))})</h2>"
        f"<p>model {escape(str(result.get('model')))} v{escape(str(result.get('model_version')))}, window "
        f"{escape(str(result.get('window')))}; {result.get('n_current')} rows (sample {result.get('n_sample')}); "
        f"share {_fmt(result.get('share'))} / threshold {result.get('threshold')}; reasons "
        f"{escape(str(result.get('reasons')))}</p>{perf_line}"
        "<table border=1 cellpadding=3><tr><th>feature</th><th>method</th><th>score (sample)</th><th>threshold</th>"
        "<th>verdict</th><th>PSI / JS (full window)</th><th>unseen share</th><th>null share</th></tr>"
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
    "trigger_reasons", "share", "threshold", "drifted_columns", "n_reference", "n_reference_total", "n_current",
    "n_sample", "sampled", "window", "min_rows", "reference_cache_hit", "mlflow_logged", "report",
)
XCOM_PERFORMANCE_KEYS = (
    "status", "degraded", "reasons", "window", "n_requests", "n_labelled", "label_coverage", "baseline",
    "roc_auc_drop", "log_loss_increase",
)
XCOM_METRICS = ("n", "roc_auc", "log_loss", "brier", "ece")


def xcom_summary(result: Mapping[str, Any]) -> dict[str, Any]:
    """The small XCom of a :func:`~mlops_provider.runtime.monitoring.monitor.run_monitor` result."""
    out: dict[str, Any] = {k: result[k] for k in XCOM_KEYS if k in result}
    perf = result.get("performance")
    if perf:
        small: dict[str, Any] = {k: perf[k] for k in XCOM_PERFORMANCE_KEYS if k in perf}
        overall = perf.get("overall") or {}
        small["overall"] = {k: overall.get(k) for k in XCOM_METRICS} if overall else None
        exp = perf.get("experiment") or {}
        small["experiment"] = (
            {k: exp.get(k) for k in ("mode", "winner", "delta_roc_auc", "confidence")} if exp else None
        )
        out["performance"] = small
    else:
        out["performance"] = perf
    return json.loads(json.dumps(out, default=str))
