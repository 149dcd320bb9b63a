"""Package an MLflow model into a bento, run it on loopback, smoke-test it over HTTP.

Packaging (:func:`package_bento`) is idempotent by key:

- the BentoML model tag is derived from the MLflow model version (``flights_delay:v3``); the
  store is checked first, so the model is imported once per version;
- the bento tag is ``<model>_service:v<version>-<hash>`` where the hash covers the service
  config, the bundled source code, the requirements and the BentoML version; an existing bento
  with that tag is reused, so a re-run builds nothing.

Local deployment (:func:`deploy_local`) is **blue/green on two loopback ports**: the new bento
starts on whichever of ``port`` / ``port + 1`` the current deployment does not use, the state
file is switched only once the new server answers ``/readyz``, and only then is the old server
stopped. If the new one fails readiness it is killed and the old one keeps serving untouched
(:class:`~mlops_provider.exceptions.DeploymentError`). Re-deploying the tag that is already
serving and ready is a no-op. The URL therefore alternates between the two ports; it is returned
(and pushed to XCom / the asset event) on every deploy.

State file: ``<state_dir>/deployment.json`` = ``{"bento_tag", "pid", "host", "port", "url",
"log_file", "started_at"}``; server logs: ``<state_dir>/logs/<bento-version>-<port>.log``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import DeploymentError, ModelRegistryError

log = logging.getLogger(__name__)

SERVICE_IMPORT = "mlops_provider.runtime.serving.service:ModelService"
CONFIG_FILE = "bento_config.json"
STATE_FILE = "deployment.json"
#: Distributions the service itself imports; pinned to the versions installed here.
SERVING_DISTRIBUTIONS = ("bentoml", "mlflow", "feast", "pandas", "numpy", "pyarrow", "pydantic")
DEFAULT_REQUEST_FIELDS = ["sched_dep_hour", "weekday", "month", "distance"]
#: Env var the service reads its config from (never passed on to a deployed server).
ENV_CONFIG_NAME = "MLOPS_BENTO_CONFIG"
#: request_id prefix of smoke-test traffic in the inference log.
SMOKE_ID_PREFIX = "smoke-"


# ---------------------------------------------------------------------------- helpers
def _safe_name(name: str) -> str:
    """A BentoML tag name part (lowercase alnum, ``-``, ``_``, ``.``)."""
    s = re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("_.-")
    if not s:
        raise DeploymentError(f"Cannot derive a BentoML tag name from {name!r}")
    return s


@contextlib.contextmanager
def bentoml_home(path: str | os.PathLike[str] | None) -> Iterator[None]:
    """Point BentoML's model and bento stores at ``path`` for this block (in-process).

    BentoML resolves ``$BENTOML_HOME`` once per process; patching the DI container lets one
    process (a test session, a long-lived worker) package into different homes.
    """
    if path is None:
        yield
        return
    from bentoml._internal.bento import BentoStore
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml._internal.models import ModelStore

    home = Path(path).expanduser().resolve()
    for sub in ("models", "bentos", "tmp", "envs"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    c = BentoMLContainer
    with contextlib.ExitStack() as stack:
        stack.enter_context(c.bentoml_home.patch(str(home)))
        stack.enter_context(c.model_store_dir.patch(str(home / "models")))
        stack.enter_context(c.bento_store_dir.patch(str(home / "bentos")))
        stack.enter_context(c.tmp_bento_store_dir.patch(str(home / "tmp")))
        stack.enter_context(c.env_store_dir.patch(str(home / "envs")))
        stack.enter_context(c.model_store.patch(ModelStore(str(home / "models"))))
        stack.enter_context(c.bento_store.patch(BentoStore(str(home / "bentos"))))
        stack.enter_context(c.tmp_bento_store.patch(BentoStore(str(home / "tmp"))))
        yield


def _pinned_requirements(extra: list[str] | None = None) -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs: dict[str, str] = {}
    for dist in SERVING_DISTRIBUTIONS:
        try:
            reqs[dist.lower()] = f"{dist}=={version(dist)}"
        except PackageNotFoundError:
            continue
    for line in extra or []:
        line = line.strip()
        if not line or line.startswith(("#", "-")):
            continue
        name = re.split(r"[<>=!~;\[ @]", line, maxsplit=1)[0].strip().lower()
        if name == line.lower():  # unpinned in the model's list: pin what is installed here
            with contextlib.suppress(PackageNotFoundError):
                line = f"{line}=={version(line)}"
        reqs.setdefault(name, line)  # serving pins win over the model's own list
    return sorted(reqs.values())


#: Parts of the mlops_provider package bundled into the bento: what the service (and a pyfunc built
#: on mlops_provider.runtime) imports. Operators, hooks, DAG code are left out, so editing them does
#: not change the bento hash.
BUNDLED = ("__init__.py", "paths.py", "exceptions.py", "runtime")


def _stage_sources(stage: Path, config: Mapping[str, Any]) -> None:
    """Copy the bundled part of mlops_provider (python files only) and the config into ``stage``."""
    import mlops_provider

    pkg = Path(mlops_provider.__file__).resolve().parent
    dst = stage / "mlops_provider"
    dst.mkdir(parents=True)
    for name in BUNDLED:
        src = pkg / name
        if src.is_dir():
            shutil.copytree(
                src,
                dst / name,
                ignore=lambda d, names: [
                    n for n in names if n == "__pycache__" or (Path(d, n).is_file() and not n.endswith(".py"))
                ],
            )
        elif src.is_file():
            shutil.copy2(src, dst / name)
    (stage / CONFIG_FILE).write_text(json.dumps(dict(config), indent=2, sort_keys=True), encoding="utf-8")


def _hash_tree(stage: Path, exclude: set[str]) -> str:
    h = hashlib.sha256()
    for p in sorted(stage.rglob("*")):
        rel = p.relative_to(stage).as_posix()
        if p.is_file() and rel not in exclude:
            h.update(rel.encode())
            h.update(b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------------------- packaging
def resolve_model_version(model_name: str, alias: str, client: Any) -> Any:
    """The MLflow ModelVersion behind ``models:/<model_name>@<alias>``."""
    try:
        return client.get_model_version_by_alias(model_name, alias)
    except Exception as e:  # noqa: BLE001 - MlflowException has no finer class for "not found"
        raise ModelRegistryError(
            f"MLflow has no model version {model_name}@{alias} ({e}). Train and promote a model first "
            f"(the gate sets @{alias}), or pass another alias."
        ) from e


def import_model_version(model_name: str, mv: Any) -> tuple[str, bool]:
    """Import MLflow version ``mv`` into the BentoML store as ``<model>:v<version>``; (tag, created)."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    tag = f"{_safe_name(model_name)}:v{mv.version}"
    try:
        existing = bentoml.models.get(tag)
    except NotFound:
        existing = None
    if existing is not None:
        have = existing.info.labels.get("mlflow_run_id", "")
        if mv.run_id and have and have != mv.run_id:
            raise DeploymentError(
                f"BentoML model {tag} was imported from MLflow run {have}, but {model_name} version "
                f"{mv.version} now comes from run {mv.run_id} (the MLflow store was reset?). Delete the "
                f"stale model with `bentoml models delete {tag}` (BENTOML_HOME) and re-run."
            )
        log.info("BentoML model %s already in the store; not importing again", tag)
        return tag, False
    uri = f"models:/{model_name}/{mv.version}"  # pinned version: the alias may move meanwhile
    log.info("Importing %s into the BentoML store as %s", uri, tag)
    try:
        bentoml.mlflow.import_model(
            tag,
            uri,
            signatures={"predict": {"batchable": True}},
            labels={
                "mlflow_model": _safe_name(model_name),
                "mlflow_version": str(mv.version),
                "mlflow_run_id": str(mv.run_id or ""),
            },
            metadata={"mlflow_source": str(mv.source or ""), "mlflow_model_name": model_name},
        )
    except BentoMLException as e:
        # a concurrent packager won the race: use its copy
        try:
            bentoml.models.get(tag)
        except NotFound:
            raise DeploymentError(f"Importing {uri} into BentoML failed: {e}") from e
        return tag, False
    return tag, True


def package_bento(
    model_name: str,
    alias: str = "champion",
    mlflow_tracking_uri: str | None = None,
    feature_repo: str | os.PathLike[str] = "",
    feature_service: str = "",
    features: Mapping[str, list[str]] | None = None,
    inference_log_dir: str | os.PathLike[str] = "",
    *,
    mlflow_registry_uri: str | None = None,
    bentoml_home_dir: str | os.PathLike[str] | None = None,
    request_fields: list[str] | None = None,
    threshold: float = 0.5,
    challenger_alias: str | None = None,
    experiment: Mapping[str, Any] | None = None,
    limits: Mapping[str, Any] | None = None,
    log_flush_interval_s: float | None = None,
    log_flush_rows: int | None = None,
) -> dict[str, Any]:
    """Import ``models:/<model_name>@<alias>`` and build the serving bento (idempotent).

    ``features`` = ``{"categorical": [...], "numeric": [...]}`` (the YAML's ``model.features``).
    With ``challenger_alias`` (e.g. ``"challenger"``) the bento also holds that model version and
    runs an online experiment: ``experiment`` = ``{"mode": "shadow" | "split", "share": 0.01,
    "route_by": [...], "name": ...}`` (see :mod:`mlops_provider.runtime.serving.experiments`); when the alias
    points at the champion's own version no experiment is configured. ``limits`` overrides
    :class:`~mlops_provider.runtime.serving.service.ServiceLimits` fields.
    Returns ``{"bento_tag", "model_tag", "model_version", "mlflow_run_id", "bento_created",
    "model_created", "challenger"}`` (``challenger`` = ``{"model_tag", "model_version", "mode",
    "share"}`` or None).
    """
    import bentoml
    from bentoml.exceptions import NotFound
    from mlflow import MlflowClient

    feats = dict(features or {})
    if not feats.get("categorical") and not feats.get("numeric"):
        raise DeploymentError(
            "package_bento needs features={'categorical': [...], 'numeric': [...]} (the model's raw columns)"
        )
    if not feature_repo or not feature_service or not inference_log_dir:
        raise DeploymentError("package_bento needs feature_repo, feature_service and inference_log_dir")
    client = MlflowClient(tracking_uri=mlflow_tracking_uri, registry_uri=mlflow_registry_uri or mlflow_tracking_uri)
    mv = resolve_model_version(model_name, alias, client)

    challenger_mv = None
    if challenger_alias:
        challenger_mv = resolve_model_version(model_name, challenger_alias, client)
        if str(challenger_mv.version) == str(mv.version):
            log.info(
                "%s@%s is the champion's version %s: no experiment", model_name, challenger_alias, mv.version
            )
            challenger_mv = None
    log_dir = str(inference_log_dir)
    if not log_dir.startswith("s3://"):
        log_dir = str(Path(inference_log_dir).expanduser().resolve())

    with bentoml_home(bentoml_home_dir):
        model_tag, model_created = import_model_version(model_name, mv)
        model_reqs: list[str] = []
        models: list[Any] = [model_tag]
        experiment_cfg: dict[str, Any] | None = None
        if challenger_mv is not None:
            challenger_tag, _ = import_model_version(model_name, challenger_mv)
            models.append(challenger_tag)
            experiment_cfg = {
                "mode": "shadow",
                **dict(experiment or {}),
                "challenger_tag": challenger_tag,
                "challenger_version": str(challenger_mv.version),
            }
            from mlops_provider.runtime.serving.experiments import ExperimentSpec

            experiment_cfg = ExperimentSpec.model_validate(experiment_cfg).model_dump()
        for tag in models:
            req_file = Path(bentoml.models.get(tag).path_of("mlflow_model")) / "requirements.txt"
            model_reqs += req_file.read_text().splitlines() if req_file.is_file() else []
        if log_dir.startswith("s3://"):
            model_reqs.append("boto3")
        requirements = _pinned_requirements(model_reqs)
        from mlops_provider.runtime.serving.service import ServiceLimits

        service_limits = ServiceLimits.model_validate(dict(limits or {})).model_dump()

        config: dict[str, Any] = {
            "model_name": model_name,
            "model_tag": model_tag,
            "model_version": str(mv.version),
            "mlflow_run_id": str(mv.run_id or ""),
            "alias": alias,
            "feature_repo": str(Path(feature_repo).expanduser().resolve()),
            "feature_service": feature_service,
            "categorical": list(feats.get("categorical") or []),
            "numeric": list(feats.get("numeric") or []),
            "request_fields": list(request_fields if request_fields is not None else DEFAULT_REQUEST_FIELDS),
            "inference_log_dir": log_dir,
            "threshold": float(threshold),
            "limits": service_limits,
            "experiment": experiment_cfg,
        }
        if log_flush_interval_s is not None:
            config["log_flush_interval_s"] = float(log_flush_interval_s)
        if log_flush_rows is not None:
            config["log_flush_rows"] = int(log_flush_rows)
        bento_name = f"{_safe_name(model_name)}_service"
        with tempfile.TemporaryDirectory(prefix="mlops-bento-") as tmp:
            stage = Path(tmp)
            _stage_sources(stage, config)
            h = hashlib.sha256()
            h.update(_hash_tree(stage, exclude=set()).encode())
            h.update(json.dumps(requirements).encode())
            h.update(bentoml.__version__.encode())
            bento_tag = f"{bento_name}:v{mv.version}-{h.hexdigest()[:12]}"
            try:
                bentoml.bentos.get(bento_tag)
                log.info("Bento %s already built; nothing to do", bento_tag)
                bento_created = False
            except NotFound:
                config["bento_tag"] = bento_tag  # not part of the hash (it is the hash)
                (stage / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
                log.info("Building bento %s (model %s, %d requirements)", bento_tag, model_tag, len(requirements))
                bento = bentoml.build(
                    SERVICE_IMPORT,
                    name=bento_name,
                    version=bento_tag.split(":", 1)[1],
                    build_ctx=str(stage),
                    include=["mlops_provider/**/*.py", CONFIG_FILE],
                    models=models,
                    labels={
                        "model": _safe_name(model_name),
                        "mlflow_version": str(mv.version),
                        "alias": _safe_name(alias),
                    },
                    description=f"{model_name} v{mv.version} served with feature service {feature_service}",
                    python={"packages": requirements, "lock_packages": False},
                )
                bento_tag = str(bento.tag)
                bento_created = True
    return {
        "bento_tag": bento_tag,
        "model_tag": model_tag,
        "model_version": str(mv.version),
        "mlflow_run_id": str(mv.run_id or ""),
        "bento_created": bento_created,
        "model_created": model_created,
        "challenger": (
            {
                "model_tag": experiment_cfg["challenger_tag"],
                "model_version": experiment_cfg["challenger_version"],
                "mode": experiment_cfg["mode"],
                "share": experiment_cfg["share"],
            }
            if experiment_cfg
            else None
        ),
    }


# ---------------------------------------------------------------------------- local deployment
def _state_path(state_dir: str | os.PathLike[str]) -> Path:
    return Path(state_dir) / STATE_FILE


def read_state(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    p = _state_path(state_dir)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("Ignoring unreadable deployment state %s", p)
        return None
    return data if isinstance(data, dict) else None


def _write_state(state_dir: str | os.PathLike[str], state: Mapping[str, Any] | None) -> None:
    p = _state_path(state_dir)
    p.parent.mkdir(parents=True, exist_ok=True)
    if state is None:
        p.unlink(missing_ok=True)
        return
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(state), indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, p)


def _proc_stat(pid: int) -> tuple[int, str, int] | None:
    """(ppid, state, start time in clock ticks) of ``pid`` from /proc, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], int(fields[19])


def _descendants(pid: int) -> list[int]:
    """All live descendants of ``pid`` (circus puts bentoml workers in their own sessions)."""
    children: dict[int, list[int]] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _proc_stat(int(d.name))
            if st is not None:
                children.setdefault(st[0], []).append(int(d.name))
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _proc_start(pid: int) -> int | None:
    st = _proc_stat(pid)
    return st[2] if st else None


def _alive(pid: int) -> bool:
    """Running and not a zombie (reaps it when it is our own exited child)."""
    with contextlib.suppress(ChildProcessError, OSError):
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    st = _proc_stat(pid)
    return st is None or st[1] != "Z"


def _is_our_server(pid: int | None, proc_start: int | None = None) -> bool:
    """True if ``pid`` is a live ``bentoml serve`` arbiter (it renames itself ``circusd``).

    ``proc_start`` (recorded in the state file) guards against a recycled pid.
    """
    if not pid or not _alive(pid):
        return False
    proc = Path(f"/proc/{pid}")
    if not proc.exists():
        return True  # no /proc (macOS): trust the state file
    if proc_start is not None and _proc_start(pid) != proc_start:
        return False
    try:
        cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    return "circusd" in cmd or ("bentoml" in cmd and "serve" in cmd)


def _ready(url: str, timeout: float = 2.0) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/readyz", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _stop_pid(pid: int, timeout: float = 30.0, proc_start: int | None = None) -> None:
    """Stop a ``bentoml serve`` arbiter and its workers: SIGTERM (graceful), SIGKILL after ``timeout``."""
    if not _is_our_server(pid, proc_start):
        return
    kids = _descendants(pid)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    time.sleep(0.5)  # let the arbiter enter its stop state before its workers go, so none is respawned
    for k in kids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(k, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid) and not any(_alive(k) for k in kids):
            return
        time.sleep(0.2)
    log.warning("bentoml serve pid %s did not stop within %.0fs; killing it and its workers", pid, timeout)
    for k in [pid, *kids, *_descendants(pid)]:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(k, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, 0)


#: Line BentoML logs when a worker's service ``__init__`` raised (circus then respawns it forever).
STARTUP_FAILED_MARKER = b"Application startup failed"


def _startup_failed(log_file: Path, offset: int) -> bool:
    try:
        with open(log_file, "rb") as fh:
            fh.seek(offset)
            return STARTUP_FAILED_MARKER in fh.read()
    except OSError:
        return False


def _log_tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free on ``host`` right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_server(
    bento_tag: str,
    host: str,
    port: int,
    log_file: Path,
    *,
    bentoml_home_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    """Start ``bentoml serve <bento_tag>`` on ``host:port`` in its own session; (process, log offset)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(os.environ if env is None else env)
    if bentoml_home_dir is not None:
        child_env["BENTOML_HOME"] = str(Path(bentoml_home_dir).expanduser().resolve())
    child_env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    child_env.pop(ENV_CONFIG_NAME, None)  # the bento's bundled config must win
    cmd = [sys.executable, "-m", "bentoml", "serve", bento_tag, "--host", host, "--port", str(port)]
    log.info("Starting %s (log %s)", " ".join(cmd), log_file)
    log_offset = log_file.stat().st_size if log_file.exists() else 0
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=child_env, cwd=str(cwd or log_file.parent), start_new_session=True,
        )
    return proc, log_offset


def wait_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    log_file: Path,
    log_offset: int,
    timeout: float,
    bento_tag: str,
    consequence: str = "the previous deployment keeps serving",
) -> None:
    """Wait for ``<url>/readyz``; on exit / startup failure / timeout stop the server and raise."""
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DeploymentError(
                f"bentoml serve {bento_tag} exited with code {proc.returncode} before becoming ready; "
                f"{consequence}. Log {log_file}:\n{_log_tail(log_file)}"
            )
        if _ready(url):
            return
        if _startup_failed(log_file, log_offset):
            _stop_pid(proc.pid, timeout=10)
            raise DeploymentError(
                f"{bento_tag} failed to start (the service raised while initialising; BentoML would keep "
                f"restarting it), stopped it; {consequence}. Log {log_file}:\n{_log_tail(log_file)}"
            )
        if time.monotonic() > deadline:
            _stop_pid(proc.pid)
            raise DeploymentError(
                f"{bento_tag} was not ready at {url}/readyz within {timeout:.0f}s; stopped it, {consequence}. "
                f"Log {log_file}:\n{_log_tail(log_file)}"
            )
        time.sleep(0.5)


def live_version(url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """What the endpoint says it serves: the JSON of ``POST <url>/health`` (``bento_tag``, ``model_version``)."""
    import httpx

    endpoint = f"{url.rstrip('/')}/health"
    try:
        resp = httpx.post(endpoint, json={}, timeout=timeout, headers=dict(headers or {}))
    except httpx.HTTPError as e:
        raise DeploymentError(f"Cannot ask {endpoint} which version it serves: {e}") from e
    if resp.status_code != 200:
        raise DeploymentError(f"{endpoint} answered HTTP {resp.status_code}: {resp.text[:300]}")
    try:
        body = resp.json()
    except ValueError as e:
        raise DeploymentError(f"{endpoint} did not answer JSON: {resp.text[:300]}") from e
    if not isinstance(body, dict):
        raise DeploymentError(f"{endpoint} answered {str(body)[:300]}, expected an object")
    return body


def verify_live_version(
    url: str,
    *,
    bento_tag: str | None = None,
    model_version: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Check the endpoint reports the deployed ``bento_tag`` / ``model_version``; returns what it reports.

    Raises :class:`~mlops_provider.exceptions.LiveVersionMismatch` when it serves something else (a
    silent rollback: the platform kept or restored the old version, another deploy won a race, ...).
    """
    from mlops_provider.exceptions import LiveVersionMismatch

    live = live_version(url, headers=headers, timeout=timeout)
    wrong = []
    if bento_tag and str(live.get("bento_tag")) != bento_tag:
        wrong.append(f"bento_tag {live.get('bento_tag')!r} != deployed {bento_tag!r}")
    if model_version and str(live.get("model_version")) != str(model_version):
        wrong.append(f"model_version {live.get('model_version')!r} != deployed {model_version!r}")
    if wrong:
        raise LiveVersionMismatch(
            f"{url} does not serve what was deployed ({'; '.join(wrong)}): a silent rollback or a concurrent "
            "deploy. Check the deployment's events/logs and re-run the deploy task.",
            live=live,
        )
    return live


def deploy_local(
    bento_tag: str,
    host: str = "127.0.0.1",
    port: int = 3000,
    state_dir: str | os.PathLike[str] = ".",
    timeout: float = 120.0,
    *,
    bentoml_home_dir: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    smoke_request: Mapping[str, Any] | None = None,
    drain_seconds: float = 2.0,
    verify_version: bool = True,
    front_port: int | None = None,
) -> dict[str, Any]:
    """Serve ``bento_tag`` with ``bentoml serve`` on loopback, blue/green (see module docstring).

    With ``front_port`` a stable front (a small reverse proxy, :func:`ensure_front`) listens there and
    forwards to whatever the state file names, so callers keep one URL (``front_url``) across switches.

    With ``smoke_request`` the new server must also answer it correctly (:func:`smoke_test`) before
    it takes over; with ``verify_version`` its ``/health`` must report ``bento_tag``. Otherwise it is
    stopped and the previous deployment keeps serving. After the switch the previous server keeps
    answering for ``drain_seconds`` (clients that resolved the old URL finish), then stops gracefully.

    Returns ``{"url", "pid", "bento_tag", "host", "port", "log_file", "changed", "previous"}``
    where ``previous`` is the replaced deployment's state (or None).
    """
    state_dir = Path(state_dir).expanduser().resolve()
    current = read_state(state_dir)
    if current and not _is_our_server(current.get("pid"), current.get("proc_start")):
        log.info("Previous deployment %s (pid %s) is not running any more", current.get("bento_tag"), current.get("pid"))
        current = None
    if current and current.get("bento_tag") == bento_tag and _ready(current["url"]):
        log.info("%s already serving at %s (pid %s); nothing to do", bento_tag, current["url"], current["pid"])
        front = ensure_front(host, front_port, state_dir) if front_port else None
        return {**current, "changed": False, "previous": None, "front_url": front["url"] if front else None}

    slots = [port, port + 1]
    target = slots[1] if current and int(current.get("port", -1)) == slots[0] else slots[0]
    if not _port_free(host, target):
        raise DeploymentError(
            f"Cannot deploy {bento_tag}: {host}:{target} is in use by a process this deployment does not "
            f"own (state {_state_path(state_dir)}). Free the port or choose another base port."
        )
    version = bento_tag.split(":", 1)[-1]
    log_file = state_dir / "logs" / f"{_safe_name(version)}-{target}.log"
    proc, log_offset = start_server(
        bento_tag, host, target, log_file, bentoml_home_dir=bentoml_home_dir, env=env, cwd=state_dir
    )
    url = f"http://{host}:{target}"
    wait_ready(proc, url, log_file, log_offset, timeout, bento_tag)
    try:
        if smoke_request is not None:
            smoke_test(url, smoke_request)
        if verify_version:
            verify_live_version(url, bento_tag=bento_tag)
    except DeploymentError as e:
        from mlops_provider.exceptions import LiveVersionMismatch

        _stop_pid(proc.pid)
        msg = f"{bento_tag} failed its pre-switch check at {url}; stopped it, the previous deployment keeps serving. {e}"
        if isinstance(e, LiveVersionMismatch):
            raise LiveVersionMismatch(msg, live=e.live) from e
        raise DeploymentError(msg) from e

    state = {
        "bento_tag": bento_tag,
        "pid": proc.pid,
        "proc_start": _proc_start(proc.pid),
        "host": host,
        "port": target,
        "url": url,
        "log_file": str(log_file),
        "started_at": datetime.now(UTC).isoformat(),
        "previous_bento_tag": current.get("bento_tag") if current else None,
    }
    _write_state(state_dir, state)
    log.info("%s ready at %s (pid %s)", bento_tag, url, proc.pid)
    if current:
        if drain_seconds > 0:
            log.info("Draining %s at %s for %.1fs", current.get("bento_tag"), current.get("url"), drain_seconds)
            time.sleep(drain_seconds)
        log.info("Stopping previous deployment %s (pid %s)", current.get("bento_tag"), current.get("pid"))
        _stop_pid(int(current["pid"]), proc_start=current.get("proc_start"))
    front = ensure_front(host, front_port, state_dir) if front_port else None
    return {**state, "changed": True, "previous": current, "front_url": front["url"] if front else None}


def stop_local(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Stop the deployment recorded in ``state_dir`` (if any) and clear the state; returns it."""
    stop_front(state_dir)
    current = read_state(state_dir)
    if current is None:
        return None
    if current.get("pid"):
        _stop_pid(int(current["pid"]), proc_start=current.get("proc_start"))
    _write_state(state_dir, None)
    return current


# ---------------------------------------------------------------------------- smoke test
def smoke_test(
    url: str,
    request: Mapping[str, Any] | list[Mapping[str, Any]],
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST ``request`` to ``<url>/predict`` over HTTP and check the answer; returns the first prediction.

    Requests without ``request_id`` get ``smoke-<uuid>`` (drift monitoring can filter them out).
    Raises DeploymentError on a non-2xx status, a missing probability, NaN, or a value outside [0, 1].
    """
    import httpx

    reqs = [dict(r) for r in request] if isinstance(request, list) else [dict(request)]
    for r in reqs:  # mark smoke traffic so drift monitoring can leave it out
        r.setdefault("request_id", f"{SMOKE_ID_PREFIX}{uuid.uuid4().hex}")
    endpoint = f"{url.rstrip('/')}/predict"
    try:
        resp = httpx.post(endpoint, json={"requests": reqs}, timeout=timeout, headers=dict(headers or {}))
    except httpx.HTTPError as e:
        raise DeploymentError(f"Smoke test could not reach {endpoint}: {e}") from e
    if not 200 <= resp.status_code < 300:
        raise DeploymentError(f"Smoke test got HTTP {resp.status_code} from {endpoint}: {resp.text[:500]}")
    try:
        body = resp.json()
    except ValueError as e:
        raise DeploymentError(f"Smoke test got non-JSON from {endpoint}: {resp.text[:500]}") from e
    if not isinstance(body, list) or len(body) != len(reqs):
        raise DeploymentError(f"Smoke test expected {len(reqs)} predictions from {endpoint}, got: {str(body)[:500]}")
    for item in body:
        p = item.get("probability") if isinstance(item, dict) else None
        if not isinstance(p, int | float) or isinstance(p, bool) or math.isnan(p) or not 0.0 <= p <= 1.0:
            raise DeploymentError(f"Smoke test got an invalid probability from {endpoint}: {item!r}")
    return dict(body[0])


# ---------------------------------------------------------------------------- containerize
def docker_engine(timeout: float = 15.0) -> tuple[bool, str]:
    """(available, detail): a ``docker`` CLI on PATH whose engine answers ``docker info``."""
    exe = shutil.which("docker")
    if not exe:
        return False, "no `docker` executable on PATH"
    try:
        r = subprocess.run(
            [exe, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return False, f"`docker info` did not answer: {e}"
    if r.returncode != 0:
        detail = (r.stderr or r.stdout).strip().splitlines()
        return False, f"`docker info` failed: {detail[-1] if detail else f'exit code {r.returncode}'}"
    return True, f"Docker engine {r.stdout.strip()}"


def containerize(
    bento_tag: str,
    *,
    image_tag: str | None = None,
    bentoml_home_dir: str | os.PathLike[str] | None = None,
    timeout: float = 3600.0,
) -> dict[str, Any]:
    """``bentoml containerize <bento_tag> -t <image_tag>`` (idempotent: an existing image is reused).

    Raises :class:`~mlops_provider.exceptions.ContainerEngineUnavailable` when no Docker engine answers
    (the operator turns it into a skip with that message). Returns ``{"image", "created", "engine"}``.
    """
    from mlops_provider.exceptions import ContainerEngineUnavailable

    image = image_tag or bento_tag
    ok, detail = docker_engine()
    if not ok:
        raise ContainerEngineUnavailable(
            f"Cannot containerize {bento_tag}: no Docker engine here ({detail}). Build the image where one runs: "
            f"`BENTOML_HOME={bentoml_home_dir or '$BENTOML_HOME'} bentoml containerize {bento_tag} -t {image}`, "
            "or deploy with target 'local' / 'bentocloud' (BentoCloud builds the image itself)."
        )
    docker = shutil.which("docker") or "docker"
    inspect = subprocess.run([docker, "image", "inspect", image], capture_output=True, text=True, check=False)
    if inspect.returncode == 0:
        log.info("Image %s already exists; not rebuilding", image)
        return {"image": image, "created": False, "engine": detail}
    env = dict(os.environ)
    if bentoml_home_dir is not None:
        env["BENTOML_HOME"] = str(Path(bentoml_home_dir).expanduser().resolve())
    cmd = [sys.executable, "-m", "bentoml", "containerize", bento_tag, "-t", image]
    log.info("Running %s", " ".join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if r.returncode != 0:
        raise DeploymentError(f"bentoml containerize {bento_tag} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return {"image": image, "created": True, "engine": detail}


# ---------------------------------------------------------------------------- stable front (optional)
FRONT_FILE = "front.json"
FRONT_INFO_PATH = "/__front__"


def _front_app(state_dir: str | os.PathLike[str]) -> Any:
    """ASGI reverse proxy to the URL in the deployment state (re-read when the file changes).

    A request whose upstream refuses or drops the connection (the old version just stopped) is retried
    on the freshly read state, so a blue/green switch behind a stable port loses nothing.
    """
    import asyncio

    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    state_file = _state_path(state_dir)
    cache: dict[str, Any] = {"mtime": None, "url": None}

    def upstream() -> str | None:
        try:
            mtime = state_file.stat().st_mtime_ns
        except OSError:
            return None
        if mtime != cache["mtime"]:
            st = read_state(state_dir)
            cache.update(mtime=mtime, url=(st or {}).get("url"))
        return cache["url"]

    client = httpx.AsyncClient(
        timeout=httpx.Timeout(120.0, connect=5.0),
        limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
    )
    hop = {b"host", b"content-length", b"connection", b"keep-alive", b"transfer-encoding"}
    drop = {"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"}

    async def info(request: Request) -> Response:
        return JSONResponse({"upstream": upstream(), "state": str(state_file)})

    async def proxy(request: Request) -> Response:
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.raw if k.lower() not in hop]
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        error: Exception | None = None
        for _ in range(5):
            base = upstream()
            if not base:
                return Response("no deployment is serving", status_code=503)
            try:
                r = await client.request(request.method, base + path, content=body, headers=headers)
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError) as e:
                error = e
                await asyncio.sleep(0.2)
                cache["mtime"] = None  # re-read the state: a switch is under way
                continue
            out = {k: v for k, v in r.headers.items() if k.lower() not in drop}
            return Response(r.content, status_code=r.status_code, headers=out)
        return Response(f"upstream unavailable: {error}", status_code=502)

    methods = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
    return Starlette(routes=[Route(FRONT_INFO_PATH, info), Route("/{path:path}", proxy, methods=methods)])


def run_front(host: str, port: int, state_dir: str) -> None:
    """Serve the stable front (blocking; what :func:`ensure_front` starts in its own process)."""
    import uvicorn

    uvicorn.run(_front_app(state_dir), host=host, port=int(port), log_level="warning", timeout_graceful_shutdown=10)


def _is_front(pid: int | None, proc_start: int | None = None) -> bool:
    if not pid or not _alive(pid):
        return False
    if proc_start is not None and _proc_start(pid) not in (None, proc_start):
        return False
    try:
        return b"run_front" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True  # no /proc: trust the state file


def ensure_front(host: str, port: int, state_dir: str | os.PathLike[str], timeout: float = 60.0) -> dict[str, Any]:
    """Start the stable front on ``host:port`` for ``state_dir`` unless it already runs; returns its state."""
    import httpx

    state_dir = Path(state_dir).expanduser().resolve()
    front_file = state_dir / FRONT_FILE
    try:
        front = json.loads(front_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        front = None
    if front and _is_front(front.get("pid"), front.get("proc_start")):
        if (front.get("host"), int(front.get("port", -1))) == (host, int(port)):
            return dict(front)
        _stop_front(front)
    if not _port_free(host, port):
        raise DeploymentError(
            f"Cannot start the stable front on {host}:{port}: the port is in use by a process this deployment "
            "does not own. Free it or change serving.front_port."
        )
    log_file = state_dir / "logs" / f"front-{port}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    code = f"from mlops_provider.runtime.serving.deploy import run_front; run_front({host!r}, {int(port)}, {str(state_dir)!r})"
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            cwd=str(state_dir), start_new_session=True,
        )
    url = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise DeploymentError(f"The stable front exited with code {proc.returncode}. Log {log_file}:\n{_log_tail(log_file)}")
        try:
            if httpx.get(f"{url}{FRONT_INFO_PATH}", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            _stop_front({"pid": proc.pid})
            raise DeploymentError(f"The stable front did not answer on {url} within {timeout:.0f}s. Log {log_file}")
        time.sleep(0.3)
    front = {"pid": proc.pid, "proc_start": _proc_start(proc.pid), "host": host, "port": int(port), "url": url,
             "log_file": str(log_file)}
    tmp = front_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(front, indent=2), encoding="utf-8")
    os.replace(tmp, front_file)
    log.info("Stable front %s -> deployment state %s (pid %s)", url, _state_path(state_dir), proc.pid)
    return front


def _stop_front(front: Mapping[str, Any], timeout: float = 15.0) -> None:
    pid = front.get("pid")
    if not _is_front(pid, front.get("proc_start")):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(int(pid), signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(int(pid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(int(pid)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(pid), signal.SIGKILL)


def stop_front(state_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """Stop the stable front of ``state_dir`` (if any); returns its state."""
    front_file = Path(state_dir) / FRONT_FILE
    try:
        front = json.loads(front_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    _stop_front(front)
    front_file.unlink(missing_ok=True)
    return dict(front)
