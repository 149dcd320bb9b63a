"""Materialization rows/s: ours (chunked, ``FeastMaterializeOperator``'s code) vs plain ``FeatureStore.materialize``.

Same window, same data (the synthetic ``sensor_hourly`` view of ``benchmarks/_feast_bench.py``), same
sqlite online store (fresh copy per run); each run in a fresh interpreter, engines alternated, median
of ``--repeat`` runs. rows/s = source rows in the window / seconds of the materialize call.

    python benchmarks/materialize_throughput.py [--entities 400] [--months 4] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _feast_bench import build, run_child  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--entities", type=int, default=400)
    ap.add_argument("--months", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--chunk-hours", type=float, default=168)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlops_bench_tp_") as tmp:
        home = Path(tmp)
        build(home, args.entities, args.months + 1)
        secs: dict[str, list[float]] = {"ours": [], "feast": []}
        rows = None
        for i in range(args.repeat):
            for engine in ("feast", "ours") if i % 2 == 0 else ("ours", "feast"):
                r = run_child(home, engine, args.months, args.chunk_hours)
                secs[engine].append(r["seconds"])
                rows = r["rows_read"] or rows
                assert r["online_entities"] == args.entities
        assert rows
        rate = {e: rows / statistics.median(s) for e, s in secs.items()}
        print(f"window: {args.months} months, {rows:,} source rows, {args.entities} entities")
        for e in ("feast", "ours"):
            print(f"{e:5s}: median {statistics.median(secs[e]):.2f} s ({', '.join(f'{s:.2f}' for s in secs[e])}) "
                  f"-> {rate[e]:,.0f} rows/s")
        ratio = rate["ours"] / rate["feast"]
        print(f"RESULT materialize_throughput ours_vs_feast={ratio:.2f} ours_rows_per_s={rate['ours']:.0f} "
              f"feast_rows_per_s={rate['feast']:.0f} goal>=0.9 {'PASS' if ratio >= 0.9 else 'FAIL'}")


if __name__ == "__main__":
    main()
