"""Operational summary of the serving endpoint for one monitor window (runtime module).

Two sources, summarised side by side:

* the **inference log** of the window (:func:`mlops_provider.runtime.serving.inference_log.read_inference_log`):
  predictions served, rate per hour, per-hour counts, model versions, prediction distribution;
* the server's **Prometheus** ``/metrics`` (BentoML 1.4 text format, parsed with
  ``prometheus_client.parser``): HTTP requests, error rates (5xx server errors, 4xx client errors)
  and latency percentiles from the ``bentoml_service_request_duration_seconds`` histogram, plus
  **resource use** of the server's processes (CPU seconds, CPU %, RSS) read with psutil from the
  pid in the deployment state.

``/metrics`` counters are cumulative since the server started. Every scrape is stored under the
window's end in ``<state>/ops/<model>.json``; the window's figures are the difference with the
previous scrape of the same server process (a restart resets the baseline: counters since the
restart). Re-running the task for the same window reuses its stored scrape, so the summary does
not change. A stopped server (or no deployment) gives ``endpoint.status = "unreachable"`` /
``"not_deployed"`` and the log half of the summary; the task never fails on it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DURATION = "bentoml_service_request_duration_seconds"


HEALTH_ENDPOINTS = frozenset({"/readyz", "/livez", "/healthz", "/metrics", "/docs.json", "/schema.json", "/"})
QUANTILES = (0.5, 0.9, 0.95, 0.99)
MAX_SCRAPES = 400


# --------------------------------------------------------------------------------- prometheus
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\S+)?\s*$")
_UNESCAPE = re.compile(r"\\(.)")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"')


def _samples_fallback(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """Minimal Prometheus text-format reader (used when prometheus_client is not installed)."""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        labels = {
            k: _UNESCAPE.sub(lambda e: {"n": "\n"}.get(e.group(1), e.group(1)), v)
            for k, v in _LABEL.findall(m.group(2) or "")
        }
        try:
            yield m.group(1), labels, float(m.group(3))
        except ValueError:
            continue


def iter_samples(text: str) -> Iterator[tuple[str, dict[str, str], float]]:
    """``(name, labels, value)`` of every sample (prometheus_client's parser when installed)."""
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        yield from _samples_fallback(text)
        return
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            yield s.name, dict(s.labels), float(s.value)


def parse_metrics(text: str) -> dict[str, Any]:
    """Per (endpoint, status code): request count, duration sum and cumulative buckets.

    Returns ``{"series": {"<endpoint> <code>": {"endpoint", "code", "count", "sum", "buckets": {le: n}}},
    "in_progress": float}``; health/metrics endpoints are dropped. Any other metric family is ignored.
    """
    series: dict[str, dict[str, Any]] = {}
    in_progress = 0.0
    for name, labels, value in iter_samples(text):
        endpoint = labels.get("endpoint", "")
        if endpoint in HEALTH_ENDPOINTS:
            continue
        if name == "bentoml_service_request_in_progress":
            in_progress += value
            continue
        if not name.startswith(DURATION):
            continue
        code = labels.get("http_response_code", "")
        entry = series.setdefault(
            f"{endpoint} {code}",
            {"endpoint": endpoint, "code": code, "count": 0.0, "sum": 0.0, "buckets": {}},
        )
        if name == DURATION + "_count":
            entry["count"] += value
        elif name == DURATION + "_sum":
            entry["sum"] += value
        elif name == DURATION + "_bucket":
            le = labels.get("le", "+Inf")
            entry["buckets"][le] = entry["buckets"].get(le, 0.0) + value
    return {"series": series, "in_progress": in_progress}


def _le(v: str) -> float:
    return math.inf if v in ("+Inf", "Inf", "inf") else float(v)


def histogram_quantile(q: float, buckets: Mapping[str, float]) -> float | None:
    """Prometheus ``histogram_quantile``: linear interpolation inside the bucket holding rank q*N."""
    items = sorted(((_le(k), float(v)) for k, v in buckets.items()), key=lambda kv: kv[0])
    if not items or items[-1][1] <= 0:
        return None
    total = items[-1][1]
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in items:
        if n >= rank:
            if math.isinf(le):
                return prev_le  # in the +Inf bucket: the highest finite bound (what Prometheus returns)
            if n == prev_n:
                return le
            return prev_le + (le - prev_le) * (rank - prev_n) / (n - prev_n)
        prev_le, prev_n = le, n
    return prev_le


def _diff(cur: Mapping[str, Any], prev: Mapping[str, Any] | None) -> dict[str, Any]:
    """cur - prev per series (counters); ``prev`` None -> cur."""
    out: dict[str, Any] = {}
    for key, s in cur.get("series", {}).items():
        p = (prev or {}).get("series", {}).get(key) or {}
        out[key] = {
            "endpoint": s["endpoint"],
            "code": s["code"],
            "count": max(0.0, s["count"] - p.get("count", 0.0)),
            "sum": max(0.0, s["sum"] - p.get("sum", 0.0)),
            "buckets": {
                le: max(0.0, n - p.get("buckets", {}).get(le, 0.0)) for le, n in s["buckets"].items()
            },
        }
    return out


def http_summary(series: Mapping[str, Mapping[str, Any]], seconds: float | None) -> dict[str, Any]:
    """Requests, rate, error rates and latency percentiles (ms) of a set of series (one window)."""
    total = sum(s["count"] for s in series.values())
    server_errors = sum(s["count"] for s in series.values() if str(s["code"]).startswith("5"))
    client_errors = sum(s["count"] for s in series.values() if str(s["code"]).startswith("4"))
    ok = [s for s in series.values() if str(s["code"]).startswith("2")]
    merged: dict[str, float] = {}
    for s in ok or series.values():
        for le, n in s["buckets"].items():
            merged[le] = merged.get(le, 0.0) + n
    lat_sum = sum(s["sum"] for s in (ok or series.values()))
    lat_n = sum(s["count"] for s in (ok or series.values()))
    by_endpoint: dict[str, dict[str, float]] = {}
    for s in series.values():
        e = by_endpoint.setdefault(
            s["endpoint"], {"requests": 0.0, "server_errors": 0.0, "client_errors": 0.0}
        )
        e["requests"] += s["count"]
        if str(s["code"]).startswith("5"):
            e["server_errors"] += s["count"]
        elif str(s["code"]).startswith("4"):
            e["client_errors"] += s["count"]
    latency = {f"p{int(q * 100)}_ms": _ms(histogram_quantile(q, merged)) for q in QUANTILES}
    latency["mean_ms"] = _ms(lat_sum / lat_n) if lat_n else None
    return {
        "requests": int(total),
        "requests_per_second": (total / seconds) if seconds and seconds > 0 else None,
        "server_errors": int(server_errors),
        "client_errors": int(client_errors),
        "error_rate": (server_errors / total) if total else None,
        "client_error_rate": (client_errors / total) if total else None,
        "latency": latency,
        "latency_of": "2xx responses" if ok else "all responses",
        "by_endpoint": {k: {kk: int(vv) for kk, vv in v.items()} for k, v in sorted(by_endpoint.items())},
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)


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
    if "prediction" in frame.columns:
        import pandas as pd

        p = pd.to_numeric(frame["prediction"], errors="coerce").dropna()
        if len(p):
            out["prediction"] = {
                "mean": float(p.mean()),
                "p50": float(p.quantile(0.5)),
                "p95": float(p.quantile(0.95)),
                "null": int(n - len(p)),
            }
    return out


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
                tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True), encoding="utf-8")
                os.replace(tmp, self.path)
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
) -> dict[str, Any]:
    """The ops summary dict of one window (see the module docstring)."""
    from mlops_provider.runtime.serving.inference_log import read_inference_log

    start, end = _iso(window_start), _iso(window_end)
    frame = read_inference_log(inference_log_dir, start=start, end=end)
    summary: dict[str, Any] = {
        "model": model,
        "window": {"start": start.isoformat() if start else None, "end": end.isoformat() if end else None},
        "inference_log": log_summary(frame, start, end),
    }
    deployment = read_deployment(deployment_state_dir)
    url = metrics_url or (
        f"{str(deployment['url']).rstrip('/')}/metrics" if deployment and deployment.get("url") else None
    )
    endpoint: dict[str, Any] = {"metrics_url": url, "bento_tag": (deployment or {}).get("bento_tag")}
    window_key = (end or datetime.now(UTC)).isoformat()
    with _ScrapeStore(Path(state_path)) as store:
        scrapes: dict[str, Any] = store["scrapes"]
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
            http = http_summary(_diff(current["metrics"], prev["metrics"] if prev else None), seconds)
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


def write_ops_report(summary: Mapping[str, Any], report_dir: str | os.PathLike[str], stem: str) -> str:
    """``<report_dir>/<stem>.json`` (atomic); same window -> same file."""
    d = Path(report_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{stem}.json"
    tmp = d / f".{stem}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(summary, indent=2, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)
    return str(path)


def report_stem(model: str, start: str | None, end: str | None) -> str:
    def part(v: str | None) -> str:
        return (v or "all").replace(":", "").replace("+0000", "Z").replace("+00:00", "Z")

    return f"ops__{model}__{part(start)}__{part(end)}"


__all__ = [
    "histogram_quantile",
    "http_summary",
    "log_summary",
    "ops_summary",
    "parse_metrics",
    "process_resources",
    "report_stem",
    "scrape",
    "write_ops_report",
]
