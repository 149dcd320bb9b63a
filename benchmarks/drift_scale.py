"""Drift on a 1,000,000-row x 30-column inference-log window: ours (streamed, sampled) vs plain Evidently.

Each measurement runs in a fresh interpreter (``ru_maxrss`` of that child only). The window is
written as daily parquet partitions (``date=YYYY-MM-DD/part.parquet``, 100k-row row groups) like a
served inference log; the reference is a 200k-row training snapshot frame (parquet).

* ours: ``load reference stats`` (cold: no cache) -> open the window -> stratified sample (cap
  ``--sample-rows``) -> per-column streamed stats -> Evidently on the samples -> JSON + HTML report;
* plain Evidently: ``pd.read_parquet`` of the whole window + ``Report([DataDriftPreset()]).run`` +
  HTML, at 1M rows, or at the largest of 1M / 500k / 250k / 100k that finishes within
  ``--baseline-budget`` seconds (a timed-out or OOM child is reported as such).

Goal: ours <= 60 s and peak RSS <= 2 GB on 2 cores. The ratio printed is plain / ours (time, RSS) at
the largest size the baseline finished (ours is also timed at that size when it is not 1M).

    python benchmarks/drift_scale.py [--rows 1000000] [--cols 30] [--sample-rows 50000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N_DRIFTED = 5


def build(root: Path, rows: int, cols: int, ref_rows: int = 200_000, days: int = 7, seed: int = 0) -> dict:
    import numpy as np
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    n_cat = cols // 3
    n_num = cols - n_cat
    numeric = [f"x{i:02d}" for i in range(n_num)]
    categorical = [f"c{i:02d}" for i in range(n_cat)]
    levels = [[f"v{j}" for j in range(5 + 3 * i)] for i in range(n_cat)]

    def frame(n: int, drift: bool) -> pd.DataFrame:
        data = {}
        for i, c in enumerate(numeric):
            shift = 0.5 if (drift and i < N_DRIFTED - 1) else 0.0
            data[c] = rng.normal(i + shift, 1 + i / 10, n)
        for i, c in enumerate(categorical):
            p = np.linspace(1, 2, len(levels[i]))
            if drift and i == 0:
                p = p[::-1] ** 3
            data[c] = rng.choice(levels[i], n, p=p / p.sum())
        return pd.DataFrame(data)

    ref = frame(ref_rows, False)
    ref.to_parquet(root / "reference.parquet", index=False)
    log = root / "inference_log"
    per_day = rows // days
    for d in range(days):
        n = per_day if d < days - 1 else rows - per_day * (days - 1)
        df = frame(n, True)
        start = pd.Timestamp("2013-07-01", tz="UTC") + pd.Timedelta(days=d)
        df.insert(0, "timestamp", start + pd.to_timedelta(np.sort(rng.integers(0, 86_400, n)), unit="s"))
        out = log / f"date={start.date().isoformat()}"
        out.mkdir(parents=True)
        pq.write_table(
            pa.Table.from_pandas(df, preserve_index=False), out / "part.parquet", row_group_size=100_000
        )
    return {
        "numeric": numeric,
        "categorical": categorical,
        "log": str(log),
        "ref": str(root / "reference.parquet"),
        "start": "2013-07-01T00:00:00+00:00",
        "end": f"2013-07-{1 + days:02d}T00:00:00+00:00",
    }


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_ours(info: dict, rows: int | None, sample_rows: int, out: Path) -> dict:
    import pandas as pd

    from mlops_provider.runtime.monitoring import drift as rt
    from mlops_provider.runtime.monitoring import reports as rr
    from mlops_provider.runtime.monitoring import statistics as ds
    from mlops_provider.runtime.monitoring import window as dw

    base = _rss_mb()
    t0 = time.perf_counter()
    rules = rt.DriftRules(sample_rows=sample_rows, reference_rows=50_000)
    num, cat = info["numeric"], info["categorical"]
    reference = pd.read_parquet(info["ref"])
    ref = ds.reference_stats(
        rt._prepare(reference, num, cat),
        num,
        cat,
        max_rows=rules.reference_rows,
        seed=rules.seed,
        bins=rules.bins,
    )
    del reference
    t_ref = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        cols = {c: "float" for c in num} | {c: "string" for c in cat}
        win = dw.open_log_window(info["log"], cols, info["start"], info["end"], tmp)
        if rows is not None and rows < win.n_rows:  # a prefix of the window (baseline-size comparison)
            win = _prefix(win, rows)
        cur = ds.stream_current(win, ref, num, cat, sample_rows=rules.sample_rows, seed=rules.seed)
        result, snap = rt.evaluate_drift(ref, cur, num, cat, rules)
        rr.write_report(snap, out, "ours", summary=result)
    return {
        "seconds": time.perf_counter() - t0,
        "reference_seconds": t_ref,
        "peak_rss_mb": _rss_mb(),
        "rss_after_imports_mb": base,
        "rows": cur.n_total,
        "drifted": result["drifted_columns"],
    }


def _prefix(win, rows: int):
    import numpy as np

    kept, total = [], 0
    for g in win.groups:
        if total >= rows:
            break
        take = min(g.n, rows - total)
        if take < g.n:
            mask = np.zeros(g.n if g.mask is None else len(g.mask), dtype=bool)
            idx = np.arange(len(mask)) if g.mask is None else np.flatnonzero(g.mask)
            mask[idx[:take]] = True
            g.mask, g.n = mask, take
        g.offset = total
        kept.append(g)
        total += take
    win.groups, win.n_rows = kept, total
    return win


def child_plain(info: dict, rows: int, out: Path) -> dict:
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    base = _rss_mb()
    t0 = time.perf_counter()
    num, cat = info["numeric"], info["categorical"]
    files = sorted(Path(info["log"]).rglob("*.parquet"))
    current = pd.concat([pd.read_parquet(f, columns=num + cat) for f in files], ignore_index=True).iloc[:rows]
    reference = pd.read_parquet(info["ref"])
    definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
    snap = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    (out / "plain.html").write_text(snap.get_html_str(as_iframe=False))
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": _rss_mb(),
        "rss_after_imports_mb": base,
        "rows": len(current),
    }


def run_child(kind: str, info_path: Path, rows: int | None, sample_rows: int, budget: float) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--info",
        str(info_path),
        "--sample-rows",
        str(sample_rows),
    ]
    if rows is not None:
        cmd += ["--child-rows", str(rows)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {budget:.0f} s"}
    if p.returncode != 0:
        return {
            "error": f"exit {p.returncode}: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else ''}"
        }
    return json.loads(p.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--cols", type=int, default=30)
    ap.add_argument("--sample-rows", type=int, default=50_000)
    ap.add_argument("--baseline-budget", type=float, default=300)
    ap.add_argument("--child")
    ap.add_argument("--info")
    ap.add_argument("--child-rows", type=int)
    args = ap.parse_args()
    if args.child == "build":
        root = Path(args.info).parent
        info = build(root, args.rows, args.cols)
        info["root"] = str(root)
        Path(args.info).write_text(json.dumps(info))
        return
    if args.child:
        info = json.loads(Path(args.info).read_text())
        out = Path(info["root"]) / f"out_{args.child}"
        out.mkdir(exist_ok=True)
        if args.child == "ours":
            r = child_ours(info, args.child_rows, args.sample_rows, out)
        else:
            r = child_plain(info, args.child_rows or args.rows, out)
        print(json.dumps(r))
        return
    with tempfile.TemporaryDirectory(prefix="mlops_bench_drift_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        info_path = root / "info.json"
        # built in a child too: ru_maxrss survives fork + exec, so a big parent would inflate every child's peak
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "build",
                "--info",
                str(info_path),
                "--rows",
                str(args.rows),
                "--cols",
                str(args.cols),
            ],
            check=True,
        )
        info = json.loads(info_path.read_text())
        print(
            f"data: {args.rows:,} rows x {args.cols} columns ({len(info['numeric'])} numeric, "
            f"{len(info['categorical'])} categorical) in 7 daily parquet partitions; reference 200,000 rows; "
            f"built in {time.perf_counter() - t0:.0f} s; {os.cpu_count()} CPU cores"
        )
        ours = run_child("ours", info_path, None, args.sample_rows, 900)
        if "error" in ours:
            print(f"ours FAILED: {ours['error']}")
            sys.exit(1)
        print(
            f"ours           {ours['rows']:>9,} rows: {ours['seconds']:6.1f} s (reference stats "
            f"{ours['reference_seconds']:.1f} s), peak RSS {ours['peak_rss_mb']:6.0f} MB "
            f"(after imports {ours['rss_after_imports_mb']:.0f} MB); drifted {ours['drifted']}"
        )
        plain = None
        for rows in [r for r in (args.rows, 500_000, 250_000, 100_000) if r <= args.rows]:
            res = run_child("plain", info_path, rows, args.sample_rows, args.baseline_budget)
            if "error" in res:
                print(f"plain Evidently {rows:>9,} rows: {res['error']}")
                continue
            plain = res
            print(
                f"plain Evidently {res['rows']:>9,} rows: {res['seconds']:6.1f} s, peak RSS "
                f"{res['peak_rss_mb']:6.0f} MB (after imports {res['rss_after_imports_mb']:.0f} MB)"
            )
            break
        same = ours
        if plain is not None and plain["rows"] != ours["rows"]:
            same = run_child("ours", info_path, plain["rows"], args.sample_rows, 900)
            print(
                f"ours           {same['rows']:>9,} rows: {same['seconds']:6.1f} s, peak RSS "
                f"{same['peak_rss_mb']:6.0f} MB"
            )
        ok = ours["seconds"] <= 60 and ours["peak_rss_mb"] <= 2048
        line = (
            f"RESULT drift_scale rows={ours['rows']} cols={args.cols} ours_s={ours['seconds']:.1f} "
            f"ours_peak_mb={ours['peak_rss_mb']:.0f} goal<=60s,<=2048MB {'PASS' if ok else 'FAIL'}"
        )
        if plain is not None:
            line += (
                f" plain_rows={plain['rows']} plain_s={plain['seconds']:.1f} plain_peak_mb={plain['peak_rss_mb']:.0f}"
                f" time_ratio_plain/ours={plain['seconds'] / same['seconds']:.1f}"
                f" rss_ratio_plain/ours={plain['peak_rss_mb'] / same['peak_rss_mb']:.1f}"
            )
        else:
            line += " plain=did-not-finish"
        print(line)


if __name__ == "__main__":
    main()
