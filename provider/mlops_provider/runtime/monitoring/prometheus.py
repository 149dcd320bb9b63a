"""The serving endpoint's Prometheus ``/metrics``: parsing and per-window HTTP figures (runtime module).

BentoML 1.4 text format, parsed with ``prometheus_client.parser`` when installed (a minimal reader
otherwise): requests, error rates and latency percentiles from the
``bentoml_service_request_duration_seconds`` histogram. Used by
:mod:`mlops_provider.runtime.monitoring.ops_metrics`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

DURATION = "bentoml_service_request_duration_seconds"
HEALTH_ENDPOINTS = frozenset({"/readyz", "/livez", "/healthz", "/metrics", "/docs.json", "/schema.json", "/"})
QUANTILES = (0.5, 0.9, 0.95, 0.99)


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


def diff_series(cur: Mapping[str, Any], prev: Mapping[str, Any] | None) -> dict[str, Any]:
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


__all__ = ["diff_series", "histogram_quantile", "http_summary", "iter_samples", "parse_metrics"]
