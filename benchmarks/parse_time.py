"""Parse time of every DAG file in dags/, measured the way Airflow's DAG processor parses, as a ratio to a
one-``@task`` DAG parsed the same way in the same run.

How the DAG processor parses (Airflow 3, ``airflow/dag_processing``): the manager process has Airflow
imported and calls ``gc.freeze()``; per file it pre-imports the ``airflow`` modules the file names
(``parsing_pre_import_modules``), then forks a fresh process that builds a ``BundleDagBag`` of the file and
serializes every DAG (``DagSerialization.to_dict``). This script does exactly that: one parent with
Airflow imported and the GC frozen, one fork per parse, timing bag + serialization in the child. Byte code
is present (one warm-up parse first), as on a running DAG processor. Median of ``--repeat`` parses.

    python benchmarks/parse_time.py [--repeat 7]

Last line: ``RESULT parse_time ratio=<ours / @task DAG> ms=<ours> baseline_ms=<@task DAG> ...``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "mlflow", "feast", "bentoml", "evidently", "pandas", "numpy", "sklearn")

TRIVIAL = '''
from datetime import datetime
from airflow.sdk import DAG, task

with DAG("trivial", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    @task
    def hello():
        return 1
    hello()
'''


def _parse_in_child(path: Path) -> dict:
    """Fork; the child parses + serializes like the DAG processor's child and reports its timing."""
    import time

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            import logging

            from airflow.dag_processing.dagbag import BundleDagBag
            from airflow.dag_processing.processor import _serialize_dags

            logging.disable(logging.CRITICAL)  # the processor child logs to its own socket, not the console
            t = time.perf_counter()
            bag = BundleDagBag(dag_folder=str(path), bundle_path=path.parent, bundle_name="bench",
                               load_op_links=False)
            serialized, errors = _serialize_dags(bag, _NullLog())
            dt = time.perf_counter() - t
            out = {"seconds": dt, "dags": len(serialized), "errors": len(bag.import_errors) + len(errors),
                   "tasks": sum(len(d.task_dict) for d in bag.dags.values()),
                   "heavy": [m for m in HEAVY if m in sys.modules], "error_text": list(bag.import_errors.values())[:1]}
        except Exception as e:  # noqa: BLE001 - reported to the parent
            out = {"error": repr(e)}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    chunks = []
    while True:
        b = os.read(r, 65536)
        if not b:
            break
        chunks.append(b)
    os.close(r)
    os.waitpid(pid, 0)
    result = json.loads(b"".join(chunks))
    if "error" in result:
        raise RuntimeError(f"parse of {path} failed in the child: {result['error']}")
    return result


class _NullLog:
    def exception(self, *a, **k):  # noqa: ANN002, ANN003
        pass


def measure(path: Path, repeat: int) -> dict:
    from airflow.dag_processing.processor import _pre_import_airflow_modules

    _pre_import_airflow_modules(str(path), _NullLog())  # what the manager does before forking
    _parse_in_child(path)  # warm-up: byte code written, as on a running processor
    runs = [_parse_in_child(path) for _ in range(repeat)]
    last = runs[-1]
    return {"median_s": statistics.median(x["seconds"] for x in runs),
            **{k: last[k] for k in ("dags", "tasks", "errors", "heavy", "error_text")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="parse-bench-")
    os.environ.update({"AIRFLOW_HOME": str(Path(tmp) / "airflow"), "MLOPS_HOME": str(Path(tmp) / "mlops"),
                       "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags")})
    import gc

    import airflow  # noqa: F401 - the manager process has Airflow imported
    import airflow.dag_processing.processor  # noqa: F401

    gc.freeze()
    trivial = Path(tmp) / "trivial_dag.py"
    trivial.write_text(TRIVIAL)
    base = measure(trivial, args.repeat)
    print(f"baseline: one-@task DAG {base['median_s'] * 1000:.1f} ms (fork per parse, median of {args.repeat})")
    print(f"{'DAG file':<24} {'DAGs':>4} {'tasks':>5} {'parse ms':>9} {'ratio':>7}  heavy imports")
    worst, worst_ms = 0.0, 0.0
    for f in sorted((REPO / "dags").glob("*.py")):
        r = measure(f, args.repeat)
        ratio = r["median_s"] / base["median_s"]
        if ratio > worst:
            worst, worst_ms = ratio, r["median_s"] * 1000
        print(f"{f.name:<24} {r['dags']:>4} {r['tasks']:>5} {r['median_s'] * 1000:>9.1f} {ratio:>6.2f}x  "
              f"{r['heavy'] or 'none'}" + (f"  IMPORT ERRORS: {r['errors']} {r['error_text']}" if r["errors"] else ""))
    print(f"RESULT parse_time ratio={worst:.2f} ms={worst_ms:.1f} baseline_ms={base['median_s'] * 1000:.1f} "
          f"repeat={args.repeat}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
