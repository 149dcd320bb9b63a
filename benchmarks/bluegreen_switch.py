"""Blue/green switch under constant load: failed requests while v1 is replaced by v2 (goal 0).

One run, real processes: a Feast repo (SQLite online store) and an MLflow sqlite registry in a temp home
(the serving integration fixtures' tiny world), two registered versions packaged into two bentos, served
with ``bentoml serve`` on free loopback ports.

* **blue/green** (ours): v1 serves; two groups of ``--threads`` clients post ``/predict`` back to back:
  one on the fixed URL of the **stable front** (``serving.port``: a reverse proxy that forwards to whatever
  the deployment state names), one resolving the endpoint from the deployment state file before every
  request (service discovery). ``deploy_local(v2)`` starts v2 on a free port, waits for ``/readyz``,
  smoke-tests it, verifies ``/health``, switches the state, drains v1 for ``drain_seconds`` and stops it.
* **baseline, stop/start in place**: the same clients on a fixed URL while the serving process is stopped
  and the next version started on the same port (what a plain restart does).

Prints failed / total requests for both and the ratio.

    python benchmarks/bluegreen_switch.py [--threads 4] [--settle 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "provider"))
sys.path.insert(0, str(REPO / "tests" / "integration"))


def free_pair() -> int:
    for _ in range(500):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p + 1))
            except OSError:
                continue
        return p
    raise RuntimeError("no free port pair")


class Load:
    """``threads`` clients posting one request after another until stopped."""

    def __init__(self, threads: int, url_of, request: dict) -> None:
        self.url_of, self.request = url_of, request
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok = 0
        self.failed: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=15) as http:
            while not self.stop.is_set():
                try:
                    url = self.url_of()
                    r = http.post(f"{url}/predict", json={"requests": [self.request]})
                    if r.status_code == 200:
                        with self.lock:
                            self.ok += 1
                            self.versions[str(r.json()[0]["model_version"])] += 1
                        continue
                    kind = f"HTTP {r.status_code}"
                except Exception as e:  # noqa: BLE001 - every failure counts
                    kind = type(e).__name__
                with self.lock:
                    self.failed[kind] += 1
                time.sleep(0.01)  # a refused connection returns at once: do not spin

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)

    @property
    def total(self) -> int:
        return self.ok + sum(self.failed.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=4)
    ap.add_argument("--settle", type=float, default=3.0, help="seconds of load before and after each switch")
    ap.add_argument("--drain", type=float, default=2.0, help="drain_seconds of the blue/green deploy")
    args = ap.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-bluegreen-"))
    os.environ.update({
        "MLOPS_HOME": str(home), "BENTOML_HOME": str(home / "bentoml"), "BENTOML_DO_NOT_TRACK": "True",
    })
    from conftest_serving import (
        FEATURE_SERVICE,
        FEATURES,
        GOOD_REQUEST,
        MODEL_NAME,
        build_feature_repo,
        register_model,
    )

    from mlops_provider.runtime.serving.package import package_bento
    from mlops_provider.runtime.serving.targets.local import deploy_local, read_state, stop_local

    tracking = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    (home / "mlflow").mkdir()
    repo = home / "feature_repo"
    build_feature_repo(repo)
    tags = []
    for _ in range(2):  # v1, then v2 becomes @champion
        register_model(tracking, home / "mlflow" / "artifacts", home)
        tags.append(package_bento(MODEL_NAME, "champion", tracking, str(repo), FEATURE_SERVICE, FEATURES,
                                  str(home / "inference_log"), bentoml_home_dir=home / "bentoml")["bento_tag"])
    v1, v2 = tags
    state = home / "state"
    port = free_pair()
    kw = dict(state_dir=state, timeout=300, bentoml_home_dir=home / "bentoml", smoke_request=GOOD_REQUEST)
    proc = None
    try:
        print(f"v1 {v1}\nv2 {v2}")
        front_url = deploy_local(v1, port=port, **kw)["url"]
        with Load(args.threads, lambda: read_state(state)["url"], GOOD_REQUEST) as bg, \
                Load(args.threads, lambda: front_url, GOOD_REQUEST) as fr:
            time.sleep(args.settle)
            t0 = time.perf_counter()
            dep = deploy_local(v2, port=port, drain_seconds=args.drain, **kw)
            switch_s = time.perf_counter() - t0
            time.sleep(args.settle)
        assert dep["previous"]["bento_tag"] == v1 and dep["url"] == front_url  # the same URL after the switch

        from mlops_provider.runtime.serving.process import start_server, stop_server, wait_ready

        fixed, backend_port = dep["backend_url"], int(dep["port"])
        with Load(args.threads, lambda: fixed, GOOD_REQUEST) as base:
            time.sleep(args.settle)
            t0 = time.perf_counter()
            stop_local(state)
            log = home / "restart.log"  # the same port: a plain in-place restart
            proc, off = start_server(v1, "127.0.0.1", backend_port, log, bentoml_home_dir=home / "bentoml")
            wait_ready(proc, fixed, log, off, 300, v1)
            restart_s = time.perf_counter() - t0
            time.sleep(args.settle)
    finally:
        stop_local(state)
        if proc is not None:
            stop_server(proc.pid)

    def rate(load: Load) -> float:
        return sum(load.failed.values()) / max(1, load.total)

    print(f"blue/green v1->v2, {args.threads} clients on the stable front:   failed {sum(fr.failed.values())} / "
          f"total {fr.total} ({rate(fr):.2%}); answered by version {dict(fr.versions)}"
          f"{'; errors ' + str(dict(fr.failed)) if fr.failed else ''}")
    print(f"blue/green v1->v2, {args.threads} clients following the state: failed {sum(bg.failed.values())} / "
          f"total {bg.total} ({rate(bg):.2%}); answered by version {dict(bg.versions)}; switch took {switch_s:.1f}s"
          f"{'; errors ' + str(dict(bg.failed)) if bg.failed else ''}")
    print(f"baseline stop/start in place:        failed {sum(base.failed.values())} / total {base.total} "
          f"({rate(base):.2%}); outage window {restart_s:.1f}s; errors {dict(base.failed)}")
    ratio = (rate(fr) + rate(bg)) / 2 / rate(base) if rate(base) else float("nan")
    print(f"failed-request rate, blue/green / stop-start: {ratio:.3f} (goal: 0 failed in blue/green)")


if __name__ == "__main__":
    main()
