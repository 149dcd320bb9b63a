"""The embedded Airflow: its components started as local processes on loopback, in order, with a PID file.

What ``make demo``, ``make airflow-ui`` and the system tests start (``airflow standalone`` is not used:
it binds the log servers to every interface and starts the scheduler before the API server answers, so
the first scheduled runs fail). Order: ``airflow db migrate`` -> ``api-server`` on 127.0.0.1 (waits for
``/api/v2/monitor/health``) -> ``dag-processor`` -> ``scheduler`` and ``triggerer`` (both
``--skip-serve-logs``: on one host the API server reads the task logs from disk, so no log server
listens at all). Every PID goes to ``<AIRFLOW_HOME>/mlops-embedded.json`` with its start time, so
``stop`` ends exactly these processes (and their children) and nothing else.

CLI::

    python -m mlops_provider.embedded start --home .airflow --dags dags --plugins plugins --port 8080 [--foreground]
    python -m mlops_provider.embedded stop --home .airflow
    python -m mlops_provider.embedded status --home .airflow

The REST client (:class:`AirflowApi`) logs in through the simple auth manager (user ``admin``; the
password is generated into ``<AIRFLOW_HOME>/simple_auth_manager_passwords.json.generated``).

Light module: stdlib at import; httpx / psutil inside the functions that need them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PID_FILE = "mlops-embedded.json"
PASSWORDS_FILE = "simple_auth_manager_passwords.json.generated"
USER = "admin"
COMPONENTS = ("api-server", "dag-processor", "scheduler", "triggerer")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _log(msg: str) -> None:
    print(f"[airflow {time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class EmbeddedAirflow:
    """Airflow's components as local processes. ``env`` adds settings (executor, database, ...)."""

    home: Path
    dags_folder: Path
    plugins_folder: Path | None = None
    port: int = 8080
    host: str = "127.0.0.1"
    env: dict[str, str] = field(default_factory=dict)
    components: tuple[str, ...] = COMPONENTS
    #: extra processes (name -> argv) started after the core ones, e.g. Celery workers
    extra: dict[str, list[str]] = field(default_factory=dict)
    #: settings of one extra process only (name -> env), e.g. a worker's ``MLOPS_WORKER_NAME``
    extra_env: dict[str, dict[str, str]] = field(default_factory=dict)
    paused_at_creation: bool = False

    def __post_init__(self) -> None:
        self.home = Path(self.home).resolve()
        self.dags_folder = Path(self.dags_folder).resolve()
        self.plugins_folder = Path(self.plugins_folder).resolve() if self.plugins_folder else None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / PID_FILE

    @property
    def passwords_file(self) -> Path:
        return self.home / PASSWORDS_FILE

    def _jwt_secret(self) -> str:
        """One secret per home, shared by every component (workers verify the API server's tokens)."""
        path = self.home / ".jwt_secret"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text().strip()

    def process_env(self) -> dict[str, str]:
        venv_bin = str(Path(sys.executable).parent)
        env = {
            **os.environ,
            "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": str(self.paused_at_creation),
            "AIRFLOW__API__HOST": self.host,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret(),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        }
        if self.plugins_folder:
            env["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(self.plugins_folder)
        if self.passwords_file.exists():  # tasks set their DAG run's note through the REST API as this user
            env["AIRFLOW_CONN_AIRFLOW_API_DEFAULT"] = json.dumps(
                {"conn_type": "http", "host": self.url, "login": USER, "password": self.password()})
        env.update(self.env)
        return env

    def _argv(self, component: str) -> list[str]:
        airflow = [sys.executable, "-m", "airflow"]
        if component == "api-server":
            return [*airflow, "api-server", "--host", self.host, "--port", str(self.port), "--workers", "1"]
        if component in ("scheduler", "triggerer"):
            return [*airflow, component, "--skip-serve-logs"]
        return [*airflow, component]

    # -- lifecycle ------------------------------------------------------------------------------
    def migrate(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        r = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=self.process_env(),
                           capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed ({r.returncode}):\n{r.stderr[-3000:]}")

    def start(self, wait_timeout: float = 300.0) -> None:
        """Start every component in order; raises (after stopping what it started) on any failure."""
        if self.running():
            raise RuntimeError(f"an embedded Airflow already runs from {self.home} (stop it first: "
                               f"python -m mlops_provider.embedded stop --home {self.home})")
        if not _port_free(self.host, self.port):
            raise RuntimeError(f"port {self.host}:{self.port} is taken; choose another with --port")
        self.migrate()
        (self.home / "logs").mkdir(parents=True, exist_ok=True)
        self.pid_file.write_text(json.dumps({"url": self.url, "processes": {}}))
        try:
            order = list(self.components)
            for name in order:
                self._spawn(name, self._argv(name))
                if name == "api-server":
                    wait_for(lambda: self.healthy(), f"API server at {self.url}", wait_timeout,
                             alive=lambda: self._alive("api-server"))
            for name, argv in self.extra.items():
                self._spawn(name, argv, self.extra_env.get(name))
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, argv: list[str], env: Mapping[str, str] | None = None) -> None:
        import psutil

        log_path = self.home / "logs" / f"{name}.log"
        out = open(log_path, "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(argv, env={**self.process_env(), **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=self.home)
        out.close()
        state = json.loads(self.pid_file.read_text())
        state["processes"][name] = {"pid": proc.pid, "create_time": psutil.Process(proc.pid).create_time(),
                                    "argv": argv, "log": str(log_path)}
        self.pid_file.write_text(json.dumps(state, indent=2))
        _log(f"started {name} (pid {proc.pid}, log {log_path})")

    def _procs(self) -> dict[str, Any]:
        if not self.pid_file.exists():
            return {}
        try:
            return dict(json.loads(self.pid_file.read_text()).get("processes", {}))
        except (OSError, ValueError):
            return {}

    def _alive(self, name: str) -> bool:
        entry = self._procs().get(name)
        return entry is not None and _process(entry) is not None

    def running(self) -> dict[str, int]:
        """Components of this home that are still alive: name -> pid."""
        return {n: int(e["pid"]) for n, e in self._procs().items() if _process(e) is not None}

    def stop(self, timeout: float = 30.0) -> list[int]:
        """Stop exactly the processes in the PID file (and their children); returns the PIDs ended."""
        return stop_recorded(self.pid_file, timeout)

    def kill(self, name: str, sig: int = signal.SIGKILL, timeout: float = 30.0) -> list[int]:
        """Send ``sig`` to one component and every process under it (default ``kill -9``: a lost machine,
        not a shutdown); wait for them to exit. Returns the PIDs signalled ([] when it was not running)."""
        entry = self._procs().get(name)
        tree = _tree(entry) if entry else []
        _end(tree, sig, timeout)
        if tree:
            _log(f"stopped {name} (signal {int(sig)}, pids {sorted(p.pid for p in tree)})")
        return sorted(p.pid for p in tree)

    def restart(self, name: str, sig: int = signal.SIGTERM) -> None:
        """Stop one component (if it runs) and start it again with the same command and settings."""
        self.kill(name, sig)
        if name in self.extra:
            self._spawn(name, self.extra[name], self.extra_env.get(name))
        elif name in self.components:
            self._spawn(name, self._argv(name))
        else:
            raise KeyError(f"no component named {name!r}: {[*self.components, *self.extra]}")

    def healthy(self) -> bool:
        import httpx

        try:
            r = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=3)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def password(self) -> str:
        return str(json.loads(self.passwords_file.read_text())[USER])

    def api(self) -> AirflowApi:
        return AirflowApi(self.url, USER, self.password())


def worker_hostname() -> str:
    """``[core] hostname_callable`` for several workers on one host: ``$MLOPS_WORKER_NAME``, else the FQDN.

    A task instance records the hostname its worker reports; workers that share a host (the distributed
    system test's ``default`` and ``gpu`` Celery workers) tell themselves apart only through this name.
    """
    return os.environ.get("MLOPS_WORKER_NAME") or socket.getfqdn()


#: ``[celery]`` settings with which a CeleryExecutor deployment rides out a broker (Redis) outage. By default
#: the scheduler fails a task at the first refused connection while handing it to the broker (the run
#: fails; the distributed system test's Redis drill shows it). With these, Celery's publish retries without
#: limit until ``[celery] operation_timeout`` cuts it; Airflow counts that as a publish timeout and tries
#: again on its next loop, up to ``task_publish_max_retries`` times (about five minutes), so the task waits
#: in ``queued`` and runs once the broker is back. Used by ``docker/docker-compose.yaml``,
#: ``docker/helm/values-celery.yaml`` (tests keep them equal) and the distributed system test.
CELERY_BROKER_OUTAGE_CONFIG: dict[str, str] = {
    "extra_celery_config": json.dumps({"task_publish_retry_policy": {
        "max_retries": None, "interval_start": 0, "interval_step": 0.5, "interval_max": 2}}),
    "task_publish_max_retries": "150",
}


def airflow_env(section: str, options: Mapping[str, str]) -> dict[str, str]:
    """Airflow config options as ``AIRFLOW__<SECTION>__<OPTION>`` environment variables."""
    return {f"AIRFLOW__{section.upper()}__{key.upper()}": value for key, value in options.items()}


def celery_worker_argv(queues: str, name: str, concurrency: int) -> list[str]:
    """``airflow celery worker`` consuming ``queues`` with ``concurrency`` slots, Celery hostname
    ``<name>@<fqdn>``, and no log server (on one host the API server reads the task logs from disk)."""
    return [sys.executable, "-m", "airflow", "celery", "worker", "--queues", queues,
            "--concurrency", str(concurrency), "--celery-hostname", f"{name}@{socket.getfqdn()}",
            "--skip-serve-logs", "--without-mingle", "--without-gossip"]


def _port_free(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _process(entry: Mapping[str, Any]) -> Any:
    """The live psutil.Process of a PID-file entry, or None (gone, or the PID was reused)."""
    import psutil

    try:
        p = psutil.Process(int(entry["pid"]))
        if abs(p.create_time() - float(entry["create_time"])) > 1.0 or p.status() == psutil.STATUS_ZOMBIE:
            return None
        return p
    except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
        return None


def _tree(entry: Mapping[str, Any]) -> list[Any]:
    """The live process of a PID-file entry and every process under it ([] when it is gone)."""
    import psutil

    p = _process(entry)
    if p is None:
        return []
    try:
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _end(procs: list[Any], sig: int, timeout: float) -> None:
    """Send ``sig`` to ``procs``, wait up to ``timeout``, then SIGKILL what is left."""
    import psutil

    for p in procs:
        try:
            p.send_signal(sig)
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:  # a graceful signal that was not honoured in time
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


def stop_recorded(pid_file: Path, timeout: float = 30.0) -> list[int]:
    """SIGTERM the recorded processes and their children, wait, then SIGKILL what is left."""
    if not pid_file.exists():
        return []
    try:
        entries = json.loads(pid_file.read_text()).get("processes", {})
    except (OSError, ValueError):
        return []
    procs = {p.pid: p for entry in entries.values() for p in _tree(entry)}
    _end(list(procs.values()), signal.SIGTERM, timeout)
    pid_file.unlink(missing_ok=True)
    return sorted(procs)


def wait_for(cond: Callable[[], Any], what: str, timeout: float, *, interval: float = 1.0,
             alive: Callable[[], bool] | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = cond()
        if result:
            return result
        if alive is not None and not alive():
            raise RuntimeError(f"gave up waiting for {what}: the process exited (see its log)")
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


class AirflowApi:
    """A small client of Airflow's REST API (v2) with a bearer token from the simple auth manager."""

    def __init__(self, url: str, username: str, password: str, timeout: float = 30.0) -> None:
        import httpx

        self.url = url.rstrip("/")
        r = httpx.post(f"{self.url}/auth/token", json={"username": username, "password": password}, timeout=timeout)
        r.raise_for_status()
        self.client = httpx.Client(base_url=f"{self.url}/api/v2", timeout=timeout,
                                   headers={"Authorization": f"Bearer {r.json()['access_token']}"})

    def get(self, path: str, **params: Any) -> Any:
        r = self.client.get(path, params=params)
        r.raise_for_status()
        return r.json()

    def dag_ids(self) -> set[str]:
        return {d["dag_id"] for d in self.get("/dags", limit=1000)["dags"]}

    def import_errors(self) -> list[dict[str, Any]]:
        return list(self.get("/importErrors", limit=1000)["import_errors"])

    def unpause(self, dag_id: str) -> None:
        self.client.patch(f"/dags/{dag_id}", json={"is_paused": False}).raise_for_status()

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, run_after: str | None = None,
                run_id: str | None = None) -> str:
        """A manual run; ``run_after`` (ISO, UTC) sets the run's clock: a DAG whose window is computed from
        ``dag_run.run_after`` (the monitor's) then looks at that time, not at now (a replay in simulated time)."""
        body: dict[str, Any] = {"logical_date": None, "conf": dict(conf or {})}
        if run_after is not None:
            body["run_after"] = run_after
        if run_id is not None:
            body["dag_run_id"] = run_id
        r = self.client.post(f"/dags/{dag_id}/dagRuns", json=body)
        r.raise_for_status()
        return str(r.json()["dag_run_id"])

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Runs of a DAG, oldest first."""
        return list(self.get(f"/dags/{dag_id}/dagRuns", order_by="id", limit=1000)["dag_runs"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        tis = self.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", limit=1000)["task_instances"]
        out: dict[str, str] = {}
        for ti in tis:
            key = ti["task_id"] if ti.get("map_index", -1) < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            out[key] = ti.get("state") or "none"
        return out

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value",
             map_index: int | None = None) -> Any:
        params = {} if map_index is None else {"map_index": map_index}
        r = self.client.get(f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}",
                            params=params)
        if r.status_code == 404:
            return None
        r.raise_for_status()
        value = r.json().get("value")
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def set_pool(self, name: str, slots: int, description: str) -> None:
        body = {"name": name, "slots": slots, "description": description}
        r = self.client.post("/pools", json=body)
        if r.status_code == 409:
            r = self.client.patch(f"/pools/{name}", json=body)
        r.raise_for_status()

    def failures(self) -> dict[str, list[str]]:
        """Every failed DAG run and failed task instance, across all DAGs."""
        runs = self.get("/dags/~/dagRuns", state="failed", limit=1000)["dag_runs"]
        tis = self.get("/dags/~/dagRuns/~/taskInstances", state="failed", limit=1000)["task_instances"]
        return {
            "dag_runs": [f"{r['dag_id']}/{r['dag_run_id']}" for r in runs],
            "task_instances": [f"{t['dag_id']}/{t['dag_run_id']}/{t['task_id']}" for t in tis],
        }


def create_pools(api: AirflowApi, dags_folder: str | os.PathLike[str]) -> dict[str, int]:
    """The pools every YAML in ``dags_folder`` needs (a task in a missing pool never runs)."""
    from mlops_provider.factory import required_pools

    pools = required_pools(dags_folder)
    for name, (slots, description) in pools.items():
        api.set_pool(name, slots, description)
    return {n: s for n, (s, _) in pools.items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mlops_provider.embedded", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("start", "stop", "status"):
        s = sub.add_parser(name)
        s.add_argument("--home", default=".airflow", help="AIRFLOW_HOME (state, logs, PID file)")
        if name == "start":
            s.add_argument("--dags", default="dags")
            s.add_argument("--plugins", default="plugins")
            s.add_argument("--port", type=int, default=8080)
            s.add_argument("--foreground", action="store_true", help="stay attached; Ctrl-C stops everything")
            s.add_argument("--unpause", action="store_true", help="unpause every pipeline DAG once parsed")
    args = p.parse_args(argv)
    af = EmbeddedAirflow(home=Path(args.home), dags_folder=Path(getattr(args, "dags", "dags")),
                         plugins_folder=Path(getattr(args, "plugins", "plugins")), port=getattr(args, "port", 8080),
                         paused_at_creation=not getattr(args, "unpause", False))
    if args.cmd == "stop":
        pids = af.stop()
        print(f"stopped {len(pids)} process(es) recorded in {af.pid_file}" if pids else "nothing was running")
        return 0
    if args.cmd == "status":
        running = af.running()
        print(json.dumps(running, indent=2) if running else "not running")
        return 0 if running else 1
    af.start()
    api = af.api()
    for name, slots in create_pools(api, af.dags_folder).items():
        _log(f"pool {name}: {slots} slot(s)")
    print(f"\nAirflow UI: {af.url}   user: {USER}   password: in {af.passwords_file}\n"
          f"stop: python -m mlops_provider.embedded stop --home {af.home}", flush=True)
    if not args.foreground:
        return 0
    try:
        while af.running():
            time.sleep(2)
        _log("a component exited; stopping the rest")
    except KeyboardInterrupt:
        pass
    finally:
        af.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
