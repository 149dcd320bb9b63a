"""``get_online_features`` p50/p99 for one entity row vs a raw read of the same keys, in the same run.

Example repo (``feature_repo``), Jan 2013 landed, built, applied and materialized (our chunked code) into:

* SQLite (the embedded ``feature_store.yaml``): raw baseline = one ``SELECT feature_name, value`` per view
  on the serialized entity key + ``ValueProto`` parsing (what the online store does, minus Feast);
* Redis (``feature_store.production.yaml``), when 127.0.0.1:6379 answers: project ``flights_delay_bench``
  and a file registry in the temp dir (so the shared PostgreSQL registry is untouched); raw baseline = one
  pipelined ``HMGET`` per view of the same hash fields + parsing. Torn down (keys deleted) at the end.

Entity row: origin JFK, carrier UA, tailnum N14228; features: the 14 materialized features of the three
views of ``flights_delay_v1`` (request-time fields excluded: they are not read from the store).

    python benchmarks/online_latency.py [--n 400]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import socket
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "provider"))

ROW = {"origin": "JFK", "carrier": "UA", "tailnum": "N14228"}
VIEWS = ["origin_weather_hourly", "carrier_delay_stats", "plane_attributes"]


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))] * 1e3


def timed(fn, n: int) -> list[float]:
    for _ in range(min(20, n)):  # warm-up
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def entity_keys(store) -> dict:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    out = {}
    for v in VIEWS:
        fv = store.get_feature_view(v)
        jk = [c.name for c in fv.entity_columns]
        out[v] = EntityKey(join_keys=jk, entity_values=[Value(string_val=ROW[k]) for k in jk])
    return out


def features(store) -> list[str]:
    return [f"{v}:{f.name}" for v in VIEWS for f in store.get_feature_view(v).features]


def sqlite_raw(store):
    import sqlite3

    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.Value_pb2 import Value

    con = sqlite3.connect(store.config.online_store.path, check_same_thread=False)
    keys = {v: serialize_entity_key(k, entity_key_serialization_version=3) for v, k in entity_keys(store).items()}
    sql = {v: f'SELECT feature_name, value, event_ts FROM "{store.project}_{v}" WHERE entity_key = ?' for v in VIEWS}

    def read() -> dict:
        out = {}
        for v in VIEWS:
            for name, value, _ts in con.execute(sql[v], (keys[v],)):
                out[name] = Value.FromString(value)
        return out

    return read


def redis_raw(store):
    import redis
    from feast.infra.online_stores.helpers import _mmh3, _redis_key
    from feast.protos.feast.types.Value_pb2 import Value

    client = redis.Redis(host="127.0.0.1", port=6379)
    keys = {v: _redis_key(store.project, k, 3) for v, k in entity_keys(store).items()}
    fields = {v: [f.name for f in store.get_feature_view(v).features] for v in VIEWS}
    hashes = {v: [_mmh3(f"{v}:{f}") for f in fields[v]] + [f"_ts:{v}".encode()] for v in VIEWS}

    def read() -> dict:
        pipe = client.pipeline(transaction=False)
        for v in VIEWS:
            pipe.hmget(keys[v], hashes[v])
        out = {}
        for v, vals in zip(VIEWS, pipe.execute(), strict=True):
            for f, raw in zip(fields[v], vals, strict=False):
                out[f] = Value.FromString(raw) if raw else None
        return out

    return read


def measure(label: str, store, raw_read, n: int) -> dict:
    refs = features(store)

    def feast_read() -> dict:
        return store.get_online_features(features=refs, entity_rows=[ROW]).to_dict()

    got, raw = feast_read(), raw_read()
    assert got["temp"][0] is not None and got["plane_seats"][0] is not None, got
    assert raw["plane_seats"] is not None and raw["plane_seats"].double_val == got["plane_seats"][0]
    feast_t, raw_t = [], []
    for _ in range(2):  # interleave blocks so drift on a shared machine hits both
        feast_t += timed(feast_read, n // 2)
        raw_t += timed(raw_read, n // 2)
    r = {
        "feast_p50": pct(feast_t, 0.5), "feast_p99": pct(feast_t, 0.99),
        "raw_p50": pct(raw_t, 0.5), "raw_p99": pct(raw_t, 0.99),
    }
    r["ratio_p50"], r["ratio_p99"] = r["feast_p50"] / r["raw_p50"], r["feast_p99"] / r["raw_p99"]
    print(f"{label:7s} get_online_features p50 {r['feast_p50']:.3f} ms p99 {r['feast_p99']:.3f} ms | raw p50 "
          f"{r['raw_p50']:.3f} ms p99 {r['raw_p99']:.3f} ms | ratio p50 {r['ratio_p50']:.1f}x p99 {r['ratio_p99']:.1f}x")
    return r


def redis_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=400)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlops_bench_lat_") as tmp:
        os.environ["MLOPS_HOME"] = tmp
        import importlib.util

        from mlops_provider.examples.flights.data import write_landing_month, write_landing_planes
        from mlops_provider.paths import ModelPaths
        from mlops_provider.runtime.features.materialize import materialize
        from mlops_provider.runtime.features.store import apply_repo, open_store

        spec = importlib.util.spec_from_file_location("bench_transforms", REPO / "feature_repo" / "transforms.py")
        transforms = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(transforms)
        paths = ModelPaths.for_model("flights_delay", tmp)
        landed = [*write_landing_month(paths.landing, 2013, 1), write_landing_planes(paths.landing)]
        transforms.build_partitions(landed, str(paths.lake))
        start, end = datetime(2013, 1, 1, tzinfo=UTC), datetime(2013, 2, 1, tzinfo=UTC)

        store = open_store(REPO / "feature_repo")
        with contextlib.redirect_stdout(io.StringIO()):
            apply_repo(store)
        materialize(store, start, end)
        results = {"sqlite": measure("sqlite", store, sqlite_raw(store), args.n)}

        if redis_up():
            import shutil

            bench_repo = Path(tmp) / "bench_repo"  # the example repo under its own project name
            shutil.copytree(REPO / "feature_repo", bench_repo, ignore=shutil.ignore_patterns("__pycache__"))
            defs = bench_repo / "definitions.py"
            defs.write_text(defs.read_text().replace("Project(name=MODEL,", 'Project(name="flights_delay_bench",'))
            prod = open_store(
                bench_repo, fs_yaml_file="feature_store.production.yaml",
                overrides={"project": "flights_delay_bench",
                           "registry": {"registry_type": "file", "path": f"{tmp}/bench_registry.db"}},
            )
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    apply_repo(prod)
                materialize(prod, start, end)
                results["redis"] = measure("redis", prod, redis_raw(prod), args.n)
            finally:
                with contextlib.redirect_stdout(io.StringIO()):
                    prod.teardown()
        else:
            print("redis   not reachable at 127.0.0.1:6379: skipped")
        s = results["sqlite"]
        line = (f"RESULT online_latency sqlite_feast_p50_ms={s['feast_p50']:.3f} sqlite_feast_p99_ms={s['feast_p99']:.3f} "
                f"sqlite_ratio_p50={s['ratio_p50']:.1f} sqlite_ratio_p99={s['ratio_p99']:.1f}")
        if "redis" in results:
            r = results["redis"]
            line += (f" redis_feast_p50_ms={r['feast_p50']:.3f} redis_feast_p99_ms={r['feast_p99']:.3f} "
                     f"redis_ratio_p50={r['ratio_p50']:.1f} redis_ratio_p99={r['ratio_p99']:.1f}")
        print(line)


if __name__ == "__main__":
    main()
