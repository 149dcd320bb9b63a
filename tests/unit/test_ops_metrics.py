"""Ops summary: Prometheus text parsing, histogram percentiles, a stopped server, idempotent windows."""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from mlops_provider.runtime.monitoring import ops_metrics as om
from mlops_provider.runtime.serving.inference_log import InferenceLogWriter

LABELS = 'runner_name="S",service_name="S",service_version="v1"'
BUCKETS = ("0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "+Inf")


def _series(endpoint: str, code: str, counts: list[int], total_s: float) -> str:
    lines = [
        f'bentoml_service_request_duration_seconds_sum{{endpoint="{endpoint}",http_response_code="{code}",'
        f"{LABELS}}} {total_s}"
    ]
    for le, n in zip(BUCKETS, counts, strict=True):
        lines.append(
            f'bentoml_service_request_duration_seconds_bucket{{endpoint="{endpoint}",'
            f'http_response_code="{code}",le="{le}",{LABELS}}} {float(n)}'
        )
    lines.append(
        f'bentoml_service_request_duration_seconds_count{{endpoint="{endpoint}",'
        f'http_response_code="{code}",{LABELS}}} {float(counts[-1])}'
    )
    return "\n".join(lines)


def metrics_text(ok: list[int], bad: int = 0, err: int = 0) -> str:
    """The shape BentoML 1.4 serves (HELP/TYPE headers, health endpoints, in-progress gauge)."""
    parts = [
        "# HELP bentoml_service_request_duration_seconds Multiprocess metric",
        "# TYPE bentoml_service_request_duration_seconds histogram",
        _series("/readyz", "200", [0, 0, 1, 1, 1, 1, 1, 1, 1], 0.012),
        _series("/predict", "200", ok, 0.04 * ok[-1]),
    ]
    if bad:
        parts.append(_series("/predict", "400", [0, bad, bad, bad, bad, bad, bad, bad, bad], 0.007 * bad))
    if err:
        parts.append(_series("/predict", "500", [0, 0, 0, err, err, err, err, err, err], 0.03 * err))
    parts += [
        "# HELP bentoml_service_request_in_progress Multiprocess metric",
        "# TYPE bentoml_service_request_in_progress gauge",
        f'bentoml_service_request_in_progress{{endpoint="/predict",{LABELS}}} 2.0',
        "# HELP bentoml_service_request_total Multiprocess metric",
        "# TYPE bentoml_service_request_total counter",
        f'bentoml_service_request_total{{endpoint="/predict",http_response_code="200",{LABELS}}} {float(ok[-1])}',
    ]
    return "\n".join(parts) + "\n"


def test_parse_and_summarise_bentoml_metrics() -> None:
    parsed = om.parse_metrics(metrics_text([0, 10, 50, 80, 95, 100, 100, 100, 100], bad=5, err=2))
    assert set(parsed["series"]) == {"/predict 200", "/predict 400", "/predict 500"}  # health checks dropped
    assert parsed["in_progress"] == 2.0
    http = om.http_summary(parsed["series"], seconds=100.0)
    assert http["requests"] == 107 and http["requests_per_second"] == pytest.approx(1.07)
    assert http["server_errors"] == 2 and http["error_rate"] == pytest.approx(2 / 107)
    assert http["client_errors"] == 5 and http["client_error_rate"] == pytest.approx(5 / 107)
    lat = http["latency"]  # of the 2xx responses: p50 lies in (0.01, 0.025], p95 at the 0.1 bound
    assert 10.0 < lat["p50_ms"] <= 25.0 and lat["p95_ms"] == pytest.approx(100.0) and lat["mean_ms"] == 40.0
    assert lat["p50_ms"] <= lat["p90_ms"] <= lat["p95_ms"] <= lat["p99_ms"]


def test_histogram_quantile_matches_prometheus_interpolation() -> None:
    b = {"0.1": 50.0, "0.2": 100.0, "+Inf": 100.0}
    assert om.histogram_quantile(0.5, b) == pytest.approx(0.1)
    assert om.histogram_quantile(0.75, b) == pytest.approx(0.15)
    assert om.histogram_quantile(0.99, {"0.1": 0.0, "+Inf": 10.0}) == pytest.approx(0.1)  # +Inf bucket
    assert om.histogram_quantile(0.5, {"+Inf": 0.0}) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _log(tmp_path: Path, start: datetime, n: int) -> Path:
    d = tmp_path / "inference_log"
    with InferenceLogWriter(d, model_version="3") as w:
        for i in range(n):
            rec = {"origin": "JFK", "prediction": 0.1 * (i % 10), "latency_ms": float(i + 1)}
            w.write_batch([rec], timestamp=start + timedelta(minutes=7 * i))
    return d


def test_stopped_server_still_gives_the_log_summary(tmp_path: Path) -> None:
    start = datetime(2026, 7, 1, tzinfo=UTC)
    log_dir = _log(tmp_path, start, 40)
    state = tmp_path / "serving"
    state.mkdir()
    (state / "deployment.json").write_text(
        json.dumps({"url": f"http://127.0.0.1:{_free_port()}", "pid": 999_999_999, "bento_tag": "svc:v1"})
    )
    out = om.ops_summary(
        model="m",
        inference_log_dir=str(log_dir),
        window_start=start,
        window_end=start + timedelta(hours=24),
        state_path=tmp_path / "ops.json",
        deployment_state_dir=str(state),
        timeout=2,
    )
    assert out["endpoint"]["status"] == "unreachable" and "ConnectError" in out["endpoint"]["error"]
    lg = out["inference_log"]
    assert lg["predictions"] == 40 and lg["predictions_per_hour"] == pytest.approx(40 / 24)
    assert lg["model_versions"] == {"3": 40} and sum(lg["per_hour"].values()) == 40
    assert 0.0 <= lg["prediction"]["mean"] <= 1.0
    assert lg["latency_ms"]["p50"] == 20.5 and lg["latency_ms"]["mean"] == 20.5  # latency the service logged
    none = om.ops_summary(
        model="m",
        inference_log_dir=str(tmp_path / "nothing"),
        window_start=start,
        window_end=start + timedelta(hours=1),
        state_path=tmp_path / "ops.json",
        deployment_state_dir=str(tmp_path / "no_deploy"),
    )
    assert none["endpoint"]["status"] == "not_deployed" and none["inference_log"]["status"] == "no_traffic"


def test_window_deltas_restart_and_idempotent_rerun(tmp_path: Path, monkeypatch) -> None:
    texts = {"now": metrics_text([0, 10, 20, 20, 20, 20, 20, 20, 20])}
    monkeypatch.setattr(om, "scrape", lambda url, timeout=5.0: (texts["now"], None))
    t0 = datetime(2026, 7, 1, tzinfo=UTC)
    kw = dict(
        model="m",
        inference_log_dir=str(tmp_path / "log"),
        state_path=tmp_path / "ops.json",
        metrics_url="http://127.0.0.1:1/metrics",
    )
    first = om.ops_summary(window_start=t0 - timedelta(hours=1), window_end=t0, **kw)
    assert (
        first["endpoint"]["http"]["requests"] == 20 and first["endpoint"]["http"]["since"] == "server start"
    )
    texts["now"] = metrics_text([0, 10, 50, 70, 70, 70, 70, 70, 70], err=5)
    second = om.ops_summary(window_start=t0, window_end=t0 + timedelta(hours=1), **kw)
    http = second["endpoint"]["http"]
    assert http["requests"] == 55 and http["server_errors"] == 5  # only this window's requests
    assert http["since"] == first["endpoint"]["scraped_at"]
    texts["now"] = metrics_text([0, 0, 0, 0, 0, 0, 0, 0, 1000])
    again = om.ops_summary(window_start=t0, window_end=t0 + timedelta(hours=1), **kw)  # re-run: stored scrape
    assert again["endpoint"]["http"] == http and again["endpoint"]["reused_scrape"] is True
    texts["now"] = metrics_text([0, 3, 3, 3, 3, 3, 3, 3, 3])  # counters went down: the server restarted
    third = om.ops_summary(window_start=t0 + timedelta(hours=1), window_end=t0 + timedelta(hours=2), **kw)
    assert third["endpoint"]["http"]["requests"] == 3 and third["endpoint"]["http"]["since"] == "server start"


def test_ops_operator_writes_the_report_next_to_drift(tmp_path: Path) -> None:
    from mlops_provider.operators.monitoring import OpsSummaryOperator

    start = datetime(2026, 7, 1, tzinfo=UTC)
    log_dir = _log(tmp_path, start, 5)

    class TI:
        def xcom_pull(self, task_ids):
            return {"status": "ok", "drift": True, "share": 0.4, "drifted_columns": ["temp"], "extra": 1}

    op = OpsSummaryOperator(
        task_id="ops_summary",
        model_name="m",
        inference_log_dir=str(log_dir),
        report_dir=str(tmp_path / "reports"),
        state_path=str(tmp_path / "ops.json"),
        window_start=start.isoformat(),
        window_end=(start + timedelta(days=1)).isoformat(),
        deployment_state_dir=str(tmp_path / "none"),
    )
    assert op.trigger_rule == "all_done"
    out = op.execute({"ti": TI()})
    assert out["drift"] == {"status": "ok", "drift": True, "share": 0.4, "drifted_columns": ["temp"]}
    saved = json.loads(Path(out["report"]).read_text())
    assert Path(out["report"]).name == "ops__m__2026-07-01T000000Z__2026-07-02T000000Z.json"
    assert saved["inference_log"]["predictions"] == 5 and saved["endpoint"]["status"] == "not_deployed"


def test_fallback_parser_agrees_with_prometheus_client() -> None:
    """Workers without prometheus_client (no serve extra) parse /metrics with the built-in reader."""
    text = metrics_text([0, 10, 50, 80, 95, 100, 100, 100, 100], bad=5, err=2)
    text += 'odd_metric{path="a\\"b}",x="\\\\"} 1.5 1700000000000\n'
    ref = sorted((n, sorted(lb.items()), v) for n, lb, v in om.iter_samples(text))
    own = sorted((n, sorted(lb.items()), v) for n, lb, v in om._samples_fallback(text))
    assert own == ref and ("odd_metric", [("path", 'a"b}'), ("x", "\\")], 1.5) in own


def test_resources_of_a_recycled_pid_are_not_reported() -> None:
    import os

    me = om.process_resources(os.getpid())
    assert me is not None and me["rss_bytes"] > 0 and me["processes"] >= 1
    ticks = om._start_ticks(os.getpid())
    assert om.process_resources(os.getpid(), ticks) is not None
    assert om.process_resources(os.getpid(), (ticks or 0) + 1) is None  # another process with the same pid
    assert om.process_resources(None) is None


def test_a_page_that_is_not_prometheus_text_is_reported_not_raised(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(
        om, "scrape", lambda url, timeout=5.0: ("<html><body>502 Bad Gateway</body></html>", None)
    )
    out = om.ops_summary(
        model="m",
        inference_log_dir=str(tmp_path / "log"),
        window_start=None,
        window_end=None,
        state_path=tmp_path / "ops.json",
        metrics_url="http://127.0.0.1:1/metrics",
    )
    assert out["endpoint"]["status"] == "unreachable" and "unparseable" in out["endpoint"]["error"]


def test_ops_counts_live_traffic_only_and_reports_test_traffic_apart(tmp_path: Path) -> None:
    """Smoke tests, infra validation, warm-up and shadow requests (``traffic``; older logs: a ``smoke-``
    request_id) are not predictions served: counted apart, by kind; untagged rows are live."""
    start = datetime(2026, 7, 1, tzinfo=UTC)
    d = tmp_path / "inference_log"
    kinds = ["live"] * 30 + [None] * 5 + ["smoke", "infra_validation", "warmup", "shadow", "SMOKE"]
    with InferenceLogWriter(d, model_version="3") as w:
        for i, kind in enumerate(kinds):
            rec = {"request_id": f"r{i}", "prediction": 0.5 if kind in ("live", None) else 9.0}
            if kind is not None:
                rec["traffic"] = kind
            w.write_batch([rec], timestamp=start + timedelta(minutes=7 * i))
    # a part written before the ``traffic`` column existed: its smoke request is known by its request_id
    legacy = pd.DataFrame({"request_id": ["smoke-old"], "prediction": [9.0], "model_version": ["2"],
                           "timestamp": [pd.Timestamp(start + timedelta(hours=6))]})
    legacy.to_parquet(d / f"date={start:%Y-%m-%d}" / "part-legacy-0.parquet", index=False)
    out = om.ops_summary(model="m", inference_log_dir=str(d), window_start=start,
                         window_end=start + timedelta(hours=24), state_path=tmp_path / "ops.json",
                         deployment_state_dir=str(tmp_path / "no_deploy"))
    lg = out["inference_log"]
    assert lg["predictions"] == 35 and sum(lg["per_hour"].values()) == 35
    assert lg["prediction"]["mean"] == 0.5  # no test request in the distribution
    assert out["test_traffic"] == {"predictions": 6, "by_kind": {"infra_validation": 1, "shadow": 1, "smoke": 3,
                                                                 "warmup": 1}}
    live, rest = om.split_traffic(pd.DataFrame({"prediction": [1.0, 2.0]}))  # no traffic / request_id columns
    assert len(live) == 2 and rest == {"predictions": 0, "by_kind": {}}
