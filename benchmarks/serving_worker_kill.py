"""A BentoML worker killed under load: requests failed and seconds until the service is whole again.

One run, real processes: the serving benchmark's world (``_serving_bench.build_world``: Feast repo, a small
torch pyfunc, the bento), packaged twice: with ``serving.workers: 2`` (ours) and with one worker (the
baseline: a single-process server, what ``workers: 1`` or a plain uvicorn app gives). For each, ``--callers``
async clients post one-row ``/predict`` requests back to back for ``--seconds``; after ``--kill-at`` seconds
one worker process is killed with SIGKILL (``kill -9``). Measured:

* ``failed`` / ``of``: requests that got no 200 (connection reset, 5xx) out of all sent;
* ``outage_s``: the longest time the clients saw no successful answer after the kill;
* ``recovery_s``: seconds from the kill until the arbiter's replacement worker runs, ``/readyz`` answers 200
  and a request succeeds again (the service is whole again).

Last line: ``RESULT serving_worker_kill failed=<n> of <m> recovery_s=<x> outage_s=<y> baseline_failed=<n>
baseline_of=<m> baseline_recovery_s=<x> baseline_outage_s=<y> workers=2``.

    python benchmarks/serving_worker_kill.py [--seconds 20] [--kill-at 5] [--callers 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _serving_bench as sb  # noqa: E402
from serving_throughput import _request  # noqa: E402

from mlops_provider.runtime.serving.process import worker_pids  # noqa: E402


def _initialised_since(log: Path, offset: int) -> int:
    """How many workers finished starting (BentoML's "Service <name> initialized") after ``offset``."""
    import re

    with open(log, "rb") as fh:
        fh.seek(offset)
        return len(re.findall(rb"Service \S+ initialized", fh.read()))


async def _run(url: str, arbiter: int, log: Path, callers: int, seconds: float, kill_at: float,
               tag: str) -> dict[str, Any]:
    import httpx

    events: list[tuple[float, bool]] = []
    killed: dict[str, Any] = {}
    counter = 0
    limits = httpx.Limits(max_connections=callers, max_keepalive_connections=callers)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:
        for k in range(3 * callers):  # warm-up: both workers answer, the batcher calibrates
            await client.post("/predict", json=_request(k, f"{tag}-warm"))
        target = len(worker_pids(arbiter))
        t0 = time.monotonic()
        deadline = t0 + seconds

        async def caller() -> None:
            nonlocal counter
            while time.monotonic() < deadline:
                counter += 1
                try:
                    r = await client.post("/predict", json=_request(counter, tag))
                    ok = r.status_code == 200
                except Exception:  # noqa: BLE001 - a reset connection is a failed request
                    ok = False
                events.append((time.monotonic(), ok))

        async def killer() -> None:
            await asyncio.sleep(kill_at)
            victim = worker_pids(arbiter)[0]
            offset = log.stat().st_size
            killed["pid"], killed["at"] = victim, time.monotonic()
            os.kill(victim, signal.SIGKILL)
            # recovered: the replacement worker has started (model loaded, warmed up), /readyz is 200 and a
            # request succeeds
            while time.monotonic() < deadline + 180:
                now = worker_pids(arbiter)
                if len(now) >= target and victim not in now and _initialised_since(log, offset) >= 1:
                    try:
                        ready = (await client.get("/readyz")).status_code == 200
                        ok = (await client.post("/predict", json=_request(0, f"{tag}-probe"))).status_code == 200
                    except Exception:  # noqa: BLE001
                        ready = ok = False
                    if ready and ok:
                        killed["recovered_at"] = time.monotonic()
                        return
                await asyncio.sleep(0.1)

        await asyncio.gather(killer(), *(caller() for _ in range(callers)))
    successes = sorted(t for t, ok in events if ok and t >= killed["at"])
    if "recovered_at" in killed:
        successes = sorted([*successes, killed["recovered_at"]])
    last_ok, outage = killed["at"], 0.0
    for t in successes:  # the longest stretch without a successful answer, from the kill on
        outage = max(outage, t - last_ok)
        last_ok = t
    if os.environ.get("MLOPS_BENCH_TRACE"):
        rel = [(round(t - killed["at"], 2), ok) for t, ok in sorted(events) if -1 < t - killed["at"] < 30]
        print(json.dumps({"trace": rel[:400], "recovered": killed.get("recovered_at", 0) - killed["at"]}))
    return {
        "requests": len(events),
        "failed": sum(1 for _, ok in events if not ok),
        "outage_s": outage,
        "recovery_s": killed.get("recovered_at", float("nan")) - killed["at"],
        "workers": target,
    }


def _serve(tag: str, home: Path, port: int) -> tuple[Any, Path]:
    from mlops_provider.runtime.serving.process import start_server, wait_ready

    log = home / f"serve-{port}.log"
    proc, offset = start_server(tag, "127.0.0.1", port, log, bentoml_home_dir=home / "bentoml")
    wait_ready(proc, f"http://127.0.0.1:{port}", log, offset, 240, tag, consequence="benchmark aborted")
    return proc, log


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--kill-at", type=float, default=5.0)
    ap.add_argument("--callers", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--home", default=None)
    args = ap.parse_args()

    from mlops_provider.runtime.serving.package import package_bento
    from mlops_provider.runtime.serving.process import stop_server

    home = Path(args.home or tempfile.mkdtemp(prefix="mlops-worker-kill-"))
    world = sb.build_world(home, serving={"workers": args.workers})
    from conftest_serving import FEATURE_SERVICE, FEATURES

    single = package_bento(
        sb.MODEL_NAME, "champion", f"sqlite:///{home / 'mlflow' / 'mlflow.db'}", str(home / "feature_repo"),
        FEATURE_SERVICE, FEATURES, str(home / "inference_log_single"), bentoml_home_dir=home / "bentoml",
        serving={"workers": 1},
    )
    results: dict[str, dict[str, Any]] = {}
    for name, tag in (("workers", world["package"]["bento_tag"]), ("baseline", single["bento_tag"])):
        port = sb.free_port()
        proc, log = _serve(tag, home, port)
        time.sleep(2.0)  # every worker up (readyz answers once the first one is)
        try:
            res = asyncio.run(_run(f"http://127.0.0.1:{port}", proc.pid, log, args.callers, args.seconds,
                                   args.kill_at, name))
        finally:
            stop_server(proc.pid, timeout=20)
        results[name] = res
        print(f"{name:9s} {json.dumps(res)}", flush=True)
    w, b = results["workers"], results["baseline"]
    print(
        f"RESULT serving_worker_kill failed={w['failed']} of {w['requests']} recovery_s={w['recovery_s']:.1f} "
        f"outage_s={w['outage_s']:.2f} baseline_failed={b['failed']} baseline_of={b['requests']} "
        f"baseline_recovery_s={b['recovery_s']:.1f} baseline_outage_s={b['outage_s']:.2f} workers={w['workers']}",
        flush=True,
    )


if __name__ == "__main__":
    main()
