"""Ops summary against a real ``bentoml serve`` process on a free loopback port (real /metrics, real pid)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from mlops_provider.runtime.monitoring import ops_metrics as om

SERVICE = textwrap.dedent(
    """
    import bentoml
    from pydantic import BaseModel


    class Req(BaseModel):
        x: float


    @bentoml.service(workers=1)
    class Echo:
        @bentoml.api
        def predict(self, requests: list[Req]) -> list[float]:
            return [r.x * 2 for r in requests]
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("ops_bento")
    (root / "svc.py").write_text(SERVICE)
    port = _free_port()
    env = {**os.environ, "BENTOML_HOME": str(root / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    log = open(root / "serve.log", "wb")  # noqa: SIM115 - closed in the finalizer
    proc = subprocess.Popen(
        [sys.executable, "-m", "bentoml", "serve", "svc:Echo", "--host", "127.0.0.1", "--port", str(port)],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None:
                pytest.fail(f"bentoml serve exited: {(root / 'serve.log').read_text()[-2000:]}")
            time.sleep(0.5)
        else:
            pytest.fail("bentoml serve not ready in 120 s")
        state = root / "serving"
        state.mkdir()
        (state / "deployment.json").write_text(
            json.dumps({"url": url, "pid": proc.pid, "bento_tag": "echo:test"})
        )
        yield {"url": url, "state": state, "root": root, "proc": proc}
    finally:
        _stop(proc)
        log.close()


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group (what we started, by pid), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def test_real_endpoint_rate_errors_latency_and_resources(server) -> None:
    url = server["url"]
    t0 = datetime.now(UTC)
    kw = dict(
        model="echo",
        inference_log_dir=str(server["root"] / "no_log"),
        state_path=server["root"] / "ops.json",
        deployment_state_dir=str(server["state"]),
    )
    for i in range(12):
        assert httpx.post(f"{url}/predict", json={"requests": [{"x": i}]}, timeout=30).status_code == 200
    for _ in range(3):
        assert httpx.post(f"{url}/predict", json={"requests": [{"y": 1}]}, timeout=30).status_code == 400
    first = om.ops_summary(window_start=t0 - timedelta(hours=1), window_end=t0, **kw)
    ep = first["endpoint"]
    assert ep["status"] == "up" and ep["metrics_url"] == f"{url}/metrics"
    http = ep["http"]
    assert http["requests"] == 15 and http["client_errors"] == 3 and http["server_errors"] == 0
    assert http["error_rate"] == 0.0 and http["client_error_rate"] == pytest.approx(0.2)
    assert http["by_endpoint"] == {"/predict": {"requests": 15, "server_errors": 0, "client_errors": 3}}
    lat = http["latency"]
    assert lat["p50_ms"] is not None and 0 < lat["p50_ms"] <= lat["p95_ms"] <= lat["p99_ms"]
    res = ep["resources"]
    assert res["processes"] >= 1 and res["rss_mb"] > 10 and res["cpu_seconds_total"] > 0

    for i in range(5):
        httpx.post(f"{url}/predict", json={"requests": [{"x": i}]}, timeout=30)
    second = om.ops_summary(window_start=t0, window_end=t0 + timedelta(hours=1), **kw)
    http2 = second["endpoint"]["http"]
    assert http2["requests"] == 5 and http2["client_errors"] == 0  # the window's requests only
    assert "cpu_percent" in second["endpoint"]["resources"]

    # the server stops: the next window says so instead of failing
    _stop(server["proc"])
    third = om.ops_summary(window_start=t0 + timedelta(hours=1), window_end=t0 + timedelta(hours=2), **kw)
    assert third["endpoint"]["status"] == "unreachable"
