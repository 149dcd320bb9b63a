"""Throughput and p50/p99 latency: the Bento service vs a plain FastAPI + uvicorn app, same run.

Both servers serve the same torch pyfunc (``TabularTorchModel``, loaded from the same BentoML store) with
the same time-correct Feast online lookup and the same inference log, through the same
:class:`~mlops_provider.runtime.serving.scorer.Scorer`; each runs as its own process with one worker on
a free loopback port. The Bento service batches concurrent requests (its greedy batcher,
``runtime/serving/batcher.py``); the baseline scores every HTTP request on its own. One async httpx client process sends one-row requests
with 1, 8 and 32 concurrent callers for ``--seconds`` per point (after a short warm-up).

Prints one line per (server, concurrency), then the ratios at each concurrency (bento / fastapi
throughput, p99 ratio) and the feature-lookup share of request latency, measured from the inference log
(Feast lookup time of the batch a request rode in / the client-observed latency of that request). The last
line: ``RESULT serving_throughput ratio_c<max>=<x> p99_ratio_c<max>=<y> ...``.

    .venv/bin/python benchmarks/serving_throughput.py [--seconds 8] [--concurrency 1 8 32]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _serving_bench as sb  # noqa: E402

ENTITIES = [
    ("JFK", "UA", "N14228"),
    ("LGA", "AA", "N24211"),
    ("EWR", "B6", "N14228"),
    ("JFK", "AA", "N24211"),
]


def _request(i: int, tag: str) -> dict[str, Any]:
    origin, carrier, tail = ENTITIES[i % len(ENTITIES)]
    return {
        "requests": [
            {
                "origin": origin,
                "carrier": carrier,
                "tailnum": tail,
                "sched_dep_hour": i % 24,
                "weekday": i % 7,
                "month": 1 + i % 12,
                "distance": 200.0 + i % 2000,
                "request_id": f"{tag}-{i}",
            }
        ]
    }


async def _load(url: str, concurrency: int, seconds: float, tag: str) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    per_id: dict[str, float] = {}
    errors = 0
    counter = 0
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        stop_warm = time.perf_counter() + min(2.0, seconds / 4)
        while time.perf_counter() < stop_warm:  # warm-up (not measured, not tagged)
            await asyncio.gather(
                *(client.post("/predict", json=_request(k, "warm")) for k in range(concurrency))
            )
        deadline = time.perf_counter() + seconds

        async def caller() -> None:
            nonlocal errors, counter
            while time.perf_counter() < deadline:
                counter += 1
                body = _request(counter, tag)
                t0 = time.perf_counter()
                try:
                    r = await client.post("/predict", json=body)
                    ok = r.status_code == 200
                except Exception:  # noqa: BLE001 - counted as an error
                    ok = False
                dt = time.perf_counter() - t0
                if ok:
                    latencies.append(dt)
                    per_id[body["requests"][0]["request_id"]] = dt
                else:
                    errors += 1

        t_start = time.perf_counter()
        await asyncio.gather(*(caller() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t_start
    latencies.sort()

    def pct(q: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies else float("nan")
        )

    return {
        "rps": len(latencies) / elapsed,
        "p50": pct(0.50),
        "p99": pct(0.99),
        "n": len(latencies),
        "errors": errors,
        "per_id": per_id,
    }


def _wait(url: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server for {url} exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} not ready in {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    from mlops_provider.runtime.serving.process import stop_server

    if proc.poll() is None:
        stop_server(proc.pid, timeout=15) if "bentoml" in " ".join(map(str, proc.args)) else proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _lookup_share(log_dir: Path, results: dict[tuple[str, int], dict[str, Any]], server: str) -> list[str]:
    from mlops_provider.runtime.serving.inference_log import read_inference_log

    frame = read_inference_log(log_dir)
    lines = []
    for (srv, conc), res in sorted(results.items()):
        if srv != server:
            continue
        rows = frame[frame["request_id"].astype(str).str.startswith(f"{srv}-c{conc}-")]
        per_id = res["per_id"]
        client_ms = rows["request_id"].map(lambda rid, per_id=per_id: per_id.get(rid, float("nan")) * 1000)
        share = (rows["feature_ms"] / client_ms).dropna()
        lines.append(
            f"feature lookup share {srv:8s} c={conc:<3d} lookup={rows['feature_ms'].mean():7.2f} ms/batch "
            f"batch={rows['latency_ms'].mean():7.2f} ms rows/batch={rows['batch_rows'].mean():6.1f} "
            f"share of request latency={share.mean() * 100:5.1f}%"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--home", default=None, help="work dir (default: a temp dir)")
    args = ap.parse_args()

    home = Path(args.home or tempfile.mkdtemp(prefix="mlops-serving-bench-"))
    t0 = time.perf_counter()
    world = sb.build_world(home)
    print(
        f"setup: bento {world['package']['bento_tag']} in {time.perf_counter() - t0:.0f}s ({home})",
        flush=True,
    )
    env = {**os.environ, "BENTOML_HOME": str(home / "bentoml"), "BENTOML_DO_NOT_TRACK": "True"}
    env.pop("MLOPS_BENTO_CONFIG", None)
    procs: dict[str, tuple[subprocess.Popen, str, Path]] = {}
    try:
        bport, fport = sb.free_port(), sb.free_port()
        blog, flog = home / "bento.log", home / "fastapi.log"
        bento_log_dir = world["log_dir"]
        fastapi_log_dir = home / "inference_log_fastapi"
        with open(blog, "wb") as out:
            procs["bento"] = (
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bentoml",
                        "serve",
                        world["package"]["bento_tag"],
                        "--host",
                        "127.0.0.1",
                        "--port",
                        str(bport),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(home),
                    start_new_session=True,
                ),
                f"http://127.0.0.1:{bport}",
                bento_log_dir,
            )
        with open(flog, "wb") as out:
            procs["fastapi"] = (
                subprocess.Popen(
                    [
                        sys.executable,
                        str(Path(__file__).with_name("_serving_bench.py")),
                        "fastapi",
                        str(world["config"]),
                        str(fport),
                        str(fastapi_log_dir),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=str(home),
                    start_new_session=True,
                ),
                f"http://127.0.0.1:{fport}",
                fastapi_log_dir,
            )
        for name, (proc, url, _) in procs.items():
            _wait(url, proc)
            print(f"{name} ready at {url} (pid {proc.pid})", flush=True)

        results: dict[tuple[str, int], dict[str, Any]] = {}
        for conc in args.concurrency:
            for name in ("fastapi", "bento"):  # alternate servers at each point: same machine state
                proc, url, _ = procs[name]
                res = asyncio.run(_load(url, conc, args.seconds, f"{name}-c{conc}"))
                results[(name, conc)] = res
                print(
                    f"{name:8s} c={conc:<3d} throughput={res['rps']:8.1f} req/s  p50={res['p50']:7.2f} ms  "
                    f"p99={res['p99']:7.2f} ms  n={res['n']}  errors={res['errors']}",
                    flush=True,
                )
        ratios: dict[int, tuple[float, float]] = {}
        for conc in args.concurrency:
            b, f = results[("bento", conc)], results[("fastapi", conc)]
            ratios[conc] = (b["rps"] / f["rps"], b["p99"] / f["p99"])
            print(
                f"ratio c={conc:<3d} throughput bento/fastapi = {ratios[conc][0]:.2f}x   "
                f"p99 bento/fastapi = {ratios[conc][1]:.2f}x",
                flush=True,
            )
        _stop(procs["bento"][0])  # flush the logs (parts are written on shutdown)
        _stop(procs["fastapi"][0])
        for name in ("bento", "fastapi"):
            for line in _lookup_share(procs[name][2], results, name):
                print(line, flush=True)
        top = max(args.concurrency)
        b, f = results[("bento", top)], results[("fastapi", top)]
        errors = sum(r["errors"] for r in results.values())
        print(
            f"RESULT serving_throughput ratio_c{top}={ratios[top][0]:.2f} p99_ratio_c{top}={ratios[top][1]:.2f} "
            f"bento_rps_c{top}={b['rps']:.1f} fastapi_rps_c{top}={f['rps']:.1f} bento_p99_ms_c{top}={b['p99']:.0f} "
            f"fastapi_p99_ms_c{top}={f['p99']:.0f} errors={errors} goal_ratio=2 met="
            f"{int(ratios[top][0] >= 2 and ratios[top][1] <= 1)}",
            flush=True,
        )
    finally:
        for proc, _, _ in procs.values():
            _stop(proc)


if __name__ == "__main__":
    main()
