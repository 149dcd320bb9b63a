"""Parse time of every DAG file in dags/, as a ratio to a trivial Task-SDK DAG parsed in the same run.

Each measurement runs in a fresh interpreter (what a DAG processor's first parse pays):
Airflow itself is imported first and not counted; the timed part is ``DagBag(<file>)``,
which imports the file and everything it imports (provider modules, pydantic, yaml) and
builds the DAG objects. Median of N fresh interpreters per file.

    python benchmarks/parse_time.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

TRIVIAL = '''
from datetime import datetime
from airflow.sdk import DAG, task

with DAG("trivial", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    @task
    def hello():
        return 1
    hello()
'''

MINIMAL = '''
from datetime import datetime
from airflow.sdk import DAG, BaseOperator

class Noop(BaseOperator):
    def execute(self, context):
        return None

with DAG("minimal", schedule=None, start_date=datetime(2024, 1, 1), catchup=False):
    Noop(task_id="noop")
'''

PROBE = textwrap.dedent(
    """
    import json, sys, time
    from airflow.dag_processing.dagbag import DagBag
    import airflow.sdk  # noqa: F401  (the SDK is loaded by any DAG: not counted)
    t = time.perf_counter()
    bag = DagBag(dag_folder=sys.argv[1])
    dt = time.perf_counter() - t
    heavy = [m for m in ("torch", "mlflow", "feast", "bentoml", "evidently", "pandas", "numpy", "sklearn")
             if m in sys.modules]
    print(json.dumps({"seconds": dt, "dags": len(bag.dag_ids), "errors": len(bag.import_errors), "heavy": heavy}))
    """
)


def measure(path: Path, repeat: int, env: dict[str, str]) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True,
                             env=env, check=True, timeout=300)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"median_s": statistics.median(r["seconds"] for r in runs), **{k: runs[-1][k] for k in ("dags", "errors", "heavy")}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "AIRFLOW_HOME": str(Path(tmp) / "airflow"), "MLOPS_HOME": str(Path(tmp) / "mlops"),
               "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
        trivial = Path(tmp) / "trivial_dag.py"
        trivial.write_text(TRIVIAL)
        minimal = Path(tmp) / "minimal_dag.py"
        minimal.write_text(MINIMAL)
        base = measure(trivial, args.repeat, env)
        base_min = measure(minimal, args.repeat, env)
        print(f"baseline trivial Task-SDK DAG (@task): {base['median_s'] * 1000:.1f} ms; "
              f"minimal DAG (one BaseOperator): {base_min['median_s'] * 1000:.1f} ms (medians of {args.repeat})")
        print(f"{'DAG file':<24} {'DAGs':>4} {'parse ms':>9} {'vs @task':>9} {'vs minimal':>11}  heavy imports")
        worst = worst_min = 0.0
        for f in sorted((REPO / "dags").glob("*.py")):
            r = measure(f, args.repeat, env)
            ratio, ratio_min = r["median_s"] / base["median_s"], r["median_s"] / base_min["median_s"]
            worst, worst_min = max(worst, ratio), max(worst_min, ratio_min)
            print(f"{f.name:<24} {r['dags']:>4} {r['median_s'] * 1000:>9.1f} {ratio:>8.2f}x {ratio_min:>10.2f}x  "
                  f"{r['heavy'] or 'none'}" + (f"  IMPORT ERRORS: {r['errors']}" if r["errors"] else ""))
        print(f"RESULT parse_time_ratio={worst:.2f} (vs @task DAG), {worst_min:.2f} (vs minimal DAG)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
