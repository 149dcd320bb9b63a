"""The service under stress, over real HTTP: overload answers 503 "overloaded" with Retry-After (not an
"unexpected error", no traceback), a killed worker is replaced while the other keeps answering
(``serving.workers``), and ``serving.stale_features: reject`` refuses requests whose features are stale
or newer than the request (422 naming them) while an unknown entity is still served.

One bento of a slow model (0.3 s per model call) with two workers and a 100 ms queueing limit.
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from conftest_serving import (
    FEATURE_SERVICE,
    FEATURES,
    GOOD_REQUEST,
    MODEL_NAME,
    SLOW_MODEL_CODE,
    ServingWorld,
    register_model,
    serve_bento,
    serving_world_fixture,  # noqa: F401 - the `serving_world` fixture
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def slow(serving_world: ServingWorld) -> Iterator[dict]:
    from mlops_provider.runtime.serving.package import package_bento

    w = serving_world
    register_model(w.tracking_uri, w.home / "mlflow" / "artifacts", w.home,
                   code=SLOW_MODEL_CODE.replace("{delay_s}", "0.3"))  # version 2 -> @champion
    pkg = package_bento(
        MODEL_NAME, "champion", w.tracking_uri, str(w.feature_repo), FEATURE_SERVICE, FEATURES,
        str(w.home / "inference_log_stress"), bentoml_home_dir=w.bentoml_home,
        serving={"workers": 2, "stale_features": "reject", "limits": {"max_latency_ms": 100, "retry_after_s": 3}},
    )
    with serve_bento(w, pkg["bento_tag"], "stress") as server:
        yield {**server, "package": pkg}


def test_overload_is_a_503_overloaded_with_retry_after(slow: dict) -> None:
    url = slow["url"]
    seen: dict[int, list[httpx.Response]] = {}

    def one(i: int) -> httpx.Response:
        return httpx.post(f"{url}/predict", json={"requests": [{**GOOD_REQUEST, "request_id": f"o{i}"}]}, timeout=60)

    before = slow["log"].stat().st_size
    with cf.ThreadPoolExecutor(32) as pool:
        for _ in range(8):  # bursts until the queueing limit bites (the batcher first calibrates itself)
            for r in pool.map(one, range(32)):
                seen.setdefault(r.status_code, []).append(r)
            if 503 in seen:
                break
    assert set(seen) <= {200, 503}, {k: v[0].text for k, v in seen.items()}
    assert 503 in seen and 200 in seen, {k: len(v) for k, v in seen.items()}
    r = seen[503][0]
    assert r.json()["error"].startswith("overloaded") and "unexpected" not in r.text
    assert r.headers["retry-after"] == "3" and r.json()["retry_after_s"] == 3
    time.sleep(0.5)
    with open(slow["log"], "rb") as fh:
        fh.seek(before)
        text = fh.read().decode(errors="replace")
    assert "status=503" in text and "Traceback" not in text and "[ERROR]" not in text


def test_stale_features_are_rejected_naming_them(slow: dict) -> None:
    url = slow["url"]
    now = datetime.now(UTC)

    def post(**changes: object) -> httpx.Response:
        return httpx.post(f"{url}/predict", json={"requests": [{**GOOD_REQUEST, **changes}]}, timeout=60)

    assert post(event_timestamp=now.isoformat()).status_code == 200  # materialized 30 min ago: fresh
    late = post(event_timestamp=(now + timedelta(hours=4)).isoformat(), request_id="late")
    assert late.status_code == 422, late.text  # the weather is 4.5 h old at that time: its TTL is 3 h
    body = late.json()
    weather = ["dewp", "humid", "precip", "pressure", "temp", "visib", "wind_gust", "wind_speed"]
    assert body["stale_features"] == weather and body["rows"] == {"late": weather}
    assert "temp" in body["error"]
    early = post(event_timestamp=(now - timedelta(hours=2)).isoformat())
    assert early.status_code == 422  # every value was written after that event time: no future leakage
    assert "carrier_delay_rate_7d" in early.json()["stale_features"]
    unknown = post(origin="ZZZ", carrier="QQ", tailnum="N0NE", event_timestamp=now.isoformat())
    assert unknown.status_code == 200  # missing is the defined fallback, not stale
    mixed = httpx.post(f"{url}/predict", json={"requests": [
        {**GOOD_REQUEST, "request_id": "ok"},
        {**GOOD_REQUEST, "request_id": "bad", "event_timestamp": (now + timedelta(days=3)).isoformat()},
    ]}, timeout=60)
    assert mixed.status_code == 422 and set(mixed.json()["rows"]) == {"bad"}
    metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert 'mlops_feature_stale_total{feature="temp"}' in metrics


def test_a_killed_worker_is_replaced_while_the_other_answers(slow: dict) -> None:
    import os
    import signal

    from mlops_provider.runtime.serving.process import worker_pids

    url, proc = slow["url"], slow["proc"]
    workers = worker_pids(proc.pid)
    assert len(workers) == 2, workers  # serving.workers
    os.kill(workers[0], signal.SIGKILL)
    ok = 0
    for i in range(6):  # the surviving worker answers while the arbiter restarts the other
        r = httpx.post(f"{url}/predict", json={"requests": [{**GOOD_REQUEST, "request_id": f"k{i}"}]}, timeout=60)
        ok += r.status_code == 200
    assert ok >= 5
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        now = worker_pids(proc.pid)
        if len(now) == 2 and workers[0] not in now:
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the killed worker was not replaced: {workers} -> {worker_pids(proc.pid)}")
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
