"""Peak RSS of materializing a 1-month vs a 10-month window: ours (chunked) vs plain ``FeatureStore.materialize``.

Each measurement runs in a fresh interpreter (``ru_maxrss`` of that child only, so peaks do not mix), on
the synthetic ``sensor_hourly`` view of ``benchmarks/_feast_bench.py`` (``--entities`` sensors x hourly x
8 floats, monthly parquet files). Printed: each peak, the 10-month / 1-month ratio of each engine
(goal for ours: <= 1.2) and the peak above the post-import baseline.

    python benchmarks/materialize_memory.py [--entities 400] [--chunk-hours 168]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _feast_bench import build, run_child  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=400)
    ap.add_argument("--chunk-hours", type=float, default=168)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlops_bench_mem_") as tmp:
        home = Path(tmp)
        info = build(home, args.entities, 10)
        print(f"data: {info['rows']:,} rows ({args.entities} entities x hourly x 8 floats, 10 monthly files)")
        res = {}
        for engine in ("ours", "feast"):
            for months in (1, 10):
                r = run_child(home, engine, months, args.chunk_hours)
                res[engine, months] = r
                print(f"{engine:5s} {months:2d} month(s): peak RSS {r['peak_rss_mb']:7.0f} MB "
                      f"(after imports {r['rss_after_imports_mb']:.0f} MB, +{r['peak_rss_mb'] - r['rss_after_imports_mb']:.0f} MB) "
                      f"{r['seconds']:.1f} s, {r['online_entities']} entities online")
        assert res["ours", 10]["online_entities"] == res["feast", 10]["online_entities"] == args.entities
        ours = res["ours", 10]["peak_rss_mb"] / res["ours", 1]["peak_rss_mb"]
        feast = res["feast", 10]["peak_rss_mb"] / res["feast", 1]["peak_rss_mb"]
        grow_o = res["ours", 10]["peak_rss_mb"] - res["ours", 1]["peak_rss_mb"]
        grow_f = res["feast", 10]["peak_rss_mb"] - res["feast", 1]["peak_rss_mb"]
        vs = res["ours", 10]["peak_rss_mb"] / res["feast", 10]["peak_rss_mb"]
        print(f"peak RSS ratio 10 months / 1 month: ours {ours:.2f} (goal <= 1.2, +{grow_o:.0f} MB), "
              f"plain Feast {feast:.2f} (+{grow_f:.0f} MB)")
        print(f"10-month peak, ours / plain Feast: {vs:.2f}")
        print(f"RESULT materialize_memory ours_ratio={ours:.2f} feast_ratio={feast:.2f} "
              f"ours_vs_feast_10m={vs:.2f} goal_ours_ratio<=1.2 {'PASS' if ours <= 1.2 else 'FAIL'}")


if __name__ == "__main__":
    main()
