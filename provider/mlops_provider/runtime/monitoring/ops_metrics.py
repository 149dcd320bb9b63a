"""Operational summary of the serving endpoint for one monitor window (runtime module).

Two sources, summarised side by side:

* the **inference log** of the window (:func:`mlops_provider.runtime.serving.inference_log.read_inference_log`):
  live predictions served, rate per hour, per-hour counts, model versions, prediction distribution. Only live
  traffic counts (the ``traffic`` column; an untagged row is live unless its request_id has the legacy
  ``smoke-`` prefix); smoke tests, infra validation, warm-up and shadow requests are counted apart, by kind,
  under ``test_traffic`` (:func:`split_traffic`);
* the server's **Prometheus** ``/metrics`` (BentoML 1.4 text format, parsed by
  :mod:`~mlops_provider.runtime.monitoring.prometheus`): HTTP requests, error rates (5xx server errors, 4xx client errors)
  and latency percentiles from the ``bentoml_service_request_duration_seconds`` histogram, plus
  **resource use** of the server's processes (CPU seconds, CPU %, RSS) read with psutil from the
  pid in the deployment state.

``/metrics`` counters are cumulative since the server started. Every scrape is stored under the
window's end in ``<state>/ops/<model>.json``; the window's figures are the difference with the
previous scrape of the same server process (a restart resets the baseline: counters since the
restart). Re-running the task for the same window reuses its stored scrape, so the summary does
not change. A stopped server (or no deployment) gives ``endpoint.status = "unreachable"`` /
``"not_deployed"`` and the log half of the summary; the task never fails on it.

The ops task's entry point is :func:`run_ops_summary`.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_provider.runtime.io import objstore
from mlops_provider.runtime.io.atomic import atomic_write
from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.monitoring.prometheus import (  # noqa: F401 - re-exported (tests, readers)
    DURATION,
    HEALTH_ENDPOINTS,
    QUANTILES,
    _samples_fallback,
    diff_series,
    histogram_quantile,
    http_summary,
    iter_samples,
    parse_metrics,
)

log = logging.getLogger(__name__)

MAX_SCRAPES = 400


# ---------------------------------------------------------------------------------- resources
def _start_ticks(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2 :].split()[19])


def process_resources(pid: int | None, proc_start: int | None = None) -> dict[str, Any] | None:
    """CPU seconds (user+system) and RSS of ``pid`` and its descendants; None when it is gone.

    ``proc_start`` (the start time in clock ticks the deployment state recorded) rejects a recycled pid.
    """
    if not pid:
        return None
    if proc_start is not None and Path("/proc").is_dir() and _start_ticks(int(pid)) != int(proc_start):
        return None
    import psutil

    try:
        root = psutil.Process(int(pid))
        procs = [root, *root.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return None
    cpu = rss = 0.0
    n = 0
    for p in procs:
        try:
            t = p.cpu_times()
            cpu += t.user + t.system
            rss += p.memory_info().rss
            n += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return {
        "processes": n,
        "cpu_seconds": round(cpu, 3),
        "rss_bytes": int(rss),
        "create_time": root.create_time(),
    }


# ------------------------------------------------------------------------------------- scrape
def scrape(url: str, timeout: float = 5.0) -> tuple[str | None, str | None]:
    """``(text, None)`` or ``(None, reason)``; never raises."""
    import httpx

    try:
        resp = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as e:
        return None, f"{type(e).__name__}: {e}"
    if resp.status_code != 200:
        return None, f"HTTP {resp.status_code}"
    return resp.text, None


def read_deployment(state_dir: str | os.PathLike[str] | None) -> dict[str, Any] | None:
    if not state_dir:
        return None
    p = Path(state_dir) / "deployment.json"
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ---------------------------------------------------------------------------------- log side
def log_summary(frame: Any, start: datetime | None, end: datetime | None) -> dict[str, Any]:
    """Predictions of the window from the inference log frame."""
    n = int(len(frame))
    hours = ((end - start).total_seconds() / 3600.0) if start and end else None
    out: dict[str, Any] = {
        "predictions": n,
        "predictions_per_hour": (n / hours) if hours else None,
        "skipped_lines": int(frame.attrs.get("skipped_lines", 0)),
    }
    if n == 0:
        out["status"] = "no_traffic"
        return out
    out["status"] = "ok"
    ts = frame["timestamp"]
    out["first"] = ts.min().isoformat()
    out["last"] = ts.max().isoformat()
    per_hour = ts.dt.floor("h").value_counts().sort_index()
    out["per_hour"] = {k.isoformat(): int(v) for k, v in per_hour.items()}
    out["peak_predictions_per_hour"] = int(per_hour.max())
    if "latency_ms" in frame.columns:  # per-prediction server-side latency, when the service logs it
        import pandas as pd

        lat = pd.to_numeric(frame["latency_ms"], errors="coerce").dropna()
        if len(lat):
            out["latency_ms"] = {f"p{int(q * 100)}": round(float(lat.quantile(q)), 3) for q in QUANTILES}
            out["latency_ms"]["mean"] = round(float(lat.mean()), 3)
    if "variant" in frame.columns:
        out["variants"] = {str(k): int(v) for k, v in frame["variant"].astype(str).value_counts().items()}
    if "model_version" in frame.columns:
        out["model_versions"] = {
            str(k): int(v) for k, v in frame["model_version"].astype(str).value_counts().items()
        }
    import pandas as pd

    for col in ("probability", "prediction"):  # binary: probability + 0/1; regression: the value
        if col not in frame.columns:
            continue
        p = pd.to_numeric(frame[col], errors="coerce").dropna()
        if len(p):
            out[col] = {
                "mean": float(p.mean()),
                "p50": float(p.quantile(0.5)),
                "p95": float(p.quantile(0.95)),
                "null": int(n - len(p)),
            }
        elif col == "prediction" and frame[col].notna().any():  # multiclass: the predicted classes
            shares = frame[col].dropna().astype(str).value_counts(normalize=True).head(20)
            out["prediction_classes"] = {str(k): round(float(v), 4) for k, v in shares.items()}
    return out


def split_traffic(frame: Any) -> tuple[Any, dict[str, Any]]:
    """(the live rows, the summary of the rest): smoke tests, infra validation, warm-up and shadow requests
    are not traffic (``traffic`` column; untagged rows are live unless their request_id has the legacy
    ``smoke-`` prefix: :func:`~mlops_provider.runtime.monitoring.window.traffic_kinds`)."""
    from mlops_provider.runtime.monitoring.window import LIVE, frame_traffic_kinds

    if len(frame) == 0:
        return frame, {"predictions": 0, "by_kind": {}}
    kinds = frame_traffic_kinds(frame)
    live = frame[kinds == LIVE]
    live.attrs.update(frame.attrs)
    other = kinds[kinds != LIVE]
    by_kind: dict[str, int] = {}
    for k in other:
        by_kind[str(k)] = by_kind.get(str(k), 0) + 1
    return live, {"predictions": int(len(other)), "by_kind": dict(sorted(by_kind.items()))}


# --------------------------------------------------------------------------------- the summary
class _ScrapeStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __enter__(self) -> dict[str, Any]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = open(self.path.with_name(self.path.name + ".lock"), "a+")  # noqa: SIM115
        fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX)
        try:
            self.data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.data = {}
        self.data.setdefault("scrapes", {})
        return self.data

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        try:
            if exc_type is None:
                scrapes = self.data["scrapes"]
                if len(scrapes) > MAX_SCRAPES:
                    self.data["scrapes"] = dict(sorted(scrapes.items())[-MAX_SCRAPES:])
                atomic_write(self.path, json.dumps(self.data, indent=1, sort_keys=True))
        finally:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
            self._lock.close()


def _iso(v: datetime | str | None) -> datetime | None:
    if v is None or v == "":
        return None
    dt = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def ops_summary(
    *,
    model: str,
    inference_log_dir: str,
    window_start: datetime | str | None,
    window_end: datetime | str | None,
    state_path: str | os.PathLike[str],
    deployment_state_dir: str | None = None,
    metrics_url: str | None = None,
    timeout: float = 5.0,
    store: ObjectStore | None = None,
) -> dict[str, Any]:
    """The ops summary dict of one window (see the module docstring)."""
    from mlops_provider.runtime.serving.inference_log import read_inference_log

    start, end = _iso(window_start), _iso(window_end)
    frame, test_traffic = split_traffic(read_inference_log(inference_log_dir, start=start, end=end, store=store))
    summary: dict[str, Any] = {
        "model": model,
        "window": {"start": start.isoformat() if start else None, "end": end.isoformat() if end else None},
        "inference_log": log_summary(frame, start, end),  # live traffic only
        "test_traffic": test_traffic,  # smoke / infra_validation / warmup / shadow rows, left out above
    }
    deployment = read_deployment(deployment_state_dir)
    url = metrics_url or (
        f"{str(deployment['url']).rstrip('/')}/metrics" if deployment and deployment.get("url") else None
    )
    endpoint: dict[str, Any] = {"metrics_url": url, "bento_tag": (deployment or {}).get("bento_tag")}
    window_key = (end or datetime.now(UTC)).isoformat()
    with _ScrapeStore(Path(state_path)) as ledger:
        scrapes: dict[str, Any] = ledger["scrapes"]
        stored = scrapes.get(window_key)
        if stored is not None and stored.get("metrics") is not None:
            current = stored
            endpoint["reused_scrape"] = True
        else:
            current = {
                "scraped_at": datetime.now(UTC).isoformat(),
                "metrics": None,
                "resources": None,
                "server": None,
                "error": None,
            }
            if url is None:
                current["error"] = "not_deployed"
            else:
                text, error = scrape(url, timeout)
                current["error"] = error
                if text is not None:
                    try:
                        current["metrics"] = parse_metrics(text)
                    except ValueError as e:  # not Prometheus text (a proxy's error page, ...)
                        current["error"] = f"unparseable /metrics: {e}"
            pid = (deployment or {}).get("pid") if not metrics_url else None
            proc_start = (deployment or {}).get("proc_start")
            res = process_resources(pid, proc_start) if current["metrics"] is not None else None
            current["resources"] = res
            current["server"] = f"{pid}@{res['create_time']}" if res else (metrics_url or url)
            current["monotonic"] = time.monotonic()
            if current["metrics"] is not None:
                scrapes[window_key] = current
        if current["metrics"] is None:
            endpoint["status"] = "not_deployed" if current["error"] == "not_deployed" else "unreachable"
            endpoint["error"] = current["error"]
        else:
            earlier = [
                (k, s)
                for k, s in scrapes.items()
                if k < window_key and s.get("server") == current["server"] and s.get("metrics") is not None
            ]
            prev = max(earlier, key=lambda kv: kv[0])[1] if earlier else None
            if prev is not None and any(
                s["count"] < (prev["metrics"]["series"].get(k) or {}).get("count", 0.0)
                for k, s in current["metrics"]["series"].items()
            ):
                prev = None  # counters went down: the server restarted
            seconds = None
            t_cur = _iso(current["scraped_at"])
            if prev is not None:
                t_prev = _iso(prev["scraped_at"])
                seconds = (t_cur - t_prev).total_seconds() if t_cur and t_prev else None
            elif start and end:
                seconds = (end - start).total_seconds()
            http = http_summary(diff_series(current["metrics"], prev["metrics"] if prev else None), seconds)
            http["since"] = prev["scraped_at"] if prev else "server start"
            http["in_progress"] = current["metrics"]["in_progress"]
            endpoint["status"] = "up"
            endpoint["scraped_at"] = current["scraped_at"]
            endpoint["http"] = http
            res, pres = current.get("resources"), (prev or {}).get("resources")
            if res:
                resources = {
                    "processes": res["processes"],
                    "rss_mb": round(res["rss_bytes"] / 2**20, 1),
                    "cpu_seconds_total": res["cpu_seconds"],
                }
                if pres and seconds:
                    resources["cpu_percent"] = round(
                        100.0 * (res["cpu_seconds"] - pres["cpu_seconds"]) / seconds, 2
                    )
                endpoint["resources"] = resources
    summary["endpoint"] = endpoint
    return json.loads(json.dumps(summary, default=str))


def write_ops_report(
    summary: Mapping[str, Any], report_dir: str | os.PathLike[str], stem: str, *, store: ObjectStore | None = None
) -> str:
    """``<report_dir>/<stem>.json`` (local: atomic; or an ``s3://`` object through ``store``); same window ->
    same file."""
    path = objstore.join(report_dir, f"{stem}.json")
    (store or objstore.DEFAULT_STORE).write_bytes(path, json.dumps(summary, indent=2, sort_keys=True, default=str))
    return path


def report_stem(model: str, start: str | None, end: str | None) -> str:
    def part(v: str | None) -> str:
        return (v or "all").replace(":", "").replace("+0000", "Z").replace("+00:00", "Z")

    return f"ops__{model}__{part(start)}__{part(end)}"


def run_ops_summary(
    *,
    model: str,
    inference_log_dir: str,
    report_dir: str,
    state_path: str | os.PathLike[str],
    window_start: datetime | str | None,
    window_end: datetime | str | None,
    deployment_state_dir: str | None = None,
    metrics_url: str | None = None,
    timeout: float = 5.0,
    drift: Mapping[str, Any] | None = None,
    store: ObjectStore | None = None,
) -> dict[str, Any]:
    """The ops task's entry point: :func:`ops_summary` of the window, the drift verdict of the same
    window beside it (``drift``: headline fields of the drift task's XCom, or None), written to
    ``<report_dir>/ops__<model>__<start>__<end>.json``; returns the summary (with ``report``)."""
    summary = ops_summary(
        model=model, inference_log_dir=inference_log_dir, window_start=window_start, window_end=window_end,
        state_path=state_path, deployment_state_dir=deployment_state_dir, metrics_url=metrics_url,
        timeout=timeout, store=store,
    )
    summary["drift"] = dict(drift) if drift is not None else None
    stem = report_stem(model, summary["window"]["start"], summary["window"]["end"])
    summary["report"] = write_ops_report(summary, report_dir, stem, store=store)
    ep, lg = summary["endpoint"], summary["inference_log"]
    http = ep.get("http") or {}
    log.info(
        "Ops %s window %s: %s live prediction(s) logged (test traffic left out: %s); endpoint %s; requests=%s "
        "error_rate=%s latency=%s; resources=%s; report %s", model, summary["window"], lg.get("predictions"),
        summary["test_traffic"]["by_kind"] or "none", ep.get("status"),
        http.get("requests"), http.get("error_rate"), http.get("latency"), ep.get("resources"), summary["report"],
    )
    return json.loads(json.dumps(summary, default=str))


__all__ = [
    "histogram_quantile",
    "http_summary",
    "log_summary",
    "ops_summary",
    "split_traffic",
    "parse_metrics",
    "process_resources",
    "report_stem",
    "run_ops_summary",
    "scrape",
    "write_ops_report",
]
