"""MLflow hook: resolves the tracking / registry URIs and credentials from an Airflow connection.

Connection ``mlflow_default`` (type ``mlflow``):

- ``host``: the tracking URI (``http://mlflow:5000``, ``https://...``, ``sqlite:///...``,
  ``databricks``); a bare host name is combined with ``port`` and ``schema`` (``http`` default);
- ``login`` / ``password``: exported as ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``;
- extras: ``registry_uri``, ``artifact_location`` (artifact root of experiments this hook creates),
  ``token`` (exported as ``MLFLOW_TRACKING_TOKEN``), ``ui_url`` (base URL of the MLflow web UI
  for run links when it differs from the tracking URI).

Without a connection the hook falls back to ``$MLFLOW_TRACKING_URI`` and then to the embedded
store of :class:`~mlops_provider.paths.ModelPaths` (``sqlite:///<home>/mlflow/mlflow.db`` with
artifacts under ``<home>/mlflow/artifacts``), so the demo and the tests need no setup.

Parse-safe: mlflow is imported inside methods only. Secrets never reach logs or XCom.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow.sdk import BaseHook

from mlops_provider.connection_forms import (
    CONNECTION_TYPES,
    conn_fields,
    legacy_form_widgets,
    ui_field_behaviour,
)
from mlops_provider.exceptions import ModelRegistryError
from mlops_provider.paths import ModelPaths
from mlops_provider.redact import redact_text, redact_url

ENV_TRACKING_URI = "MLFLOW_TRACKING_URI"
ENV_REGISTRY_URI = "MLFLOW_REGISTRY_URI"
#: bounded retry of the first contact with a remote tracking server (overridable per call)
ENV_CONNECT_ATTEMPTS = "MLOPS_MLFLOW_CONNECT_ATTEMPTS"
ENV_CONNECT_BACKOFF = "MLOPS_MLFLOW_CONNECT_BACKOFF"
ENV_CONNECT_TIMEOUT = "MLOPS_MLFLOW_CONNECT_TIMEOUT"
DEFAULT_CONNECT_ATTEMPTS = 5
DEFAULT_CONNECT_BACKOFF = 1.0  # seconds; doubles each attempt (1, 2, 4, 8: ~15 s in all)
DEFAULT_CONNECT_TIMEOUT = 10.0  # seconds per attempt

_log = logging.getLogger(__name__)
_SQLITE_READY: set[str] = set()


def init_sqlite_store(uri: str, db: Path) -> None:
    """Create an embedded (``sqlite:///``) MLflow store's tables once, under an exclusive file lock.

    MLflow creates and migrates a fresh SQLite store's tables in whichever process opens it first; two
    tasks doing so at once (e.g. two models' scheduled monitor runs right after start-up) race, and one
    fails with ``duplicate column name``. The first opener here initializes the store while the others wait
    on ``<db>.init-lock``; afterwards opening an initialized store only checks its tables. Once per process.
    """
    if uri in _SQLITE_READY:
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock (the embedded store is for one machine anyway)
        fcntl = None  # type: ignore[assignment]
    from mlflow import MlflowClient

    with open(db.with_name(db.name + ".init-lock"), "a") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)  # creates the tracking tables
            client.search_registered_models(max_results=1)  # ... and opens the registry store
        finally:
            if fcntl is not None:
                fcntl.flock(fh, fcntl.LOCK_UN)
    _SQLITE_READY.add(uri)


class MlflowUnreachableError(ModelRegistryError):
    """The MLflow tracking server did not answer after the bounded retries."""


def _probe_headers(credentials: dict[str, str] | None) -> dict[str, str]:
    """Authorization of the probe from the hook's credentials (or the process's ``MLFLOW_TRACKING_*``)."""
    import base64

    creds = dict(credentials) if credentials is not None else {
        k: v for k in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")
        if (v := os.environ.get(k))
    }
    if creds.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {creds['MLFLOW_TRACKING_TOKEN']}"}
    if creds.get("MLFLOW_TRACKING_USERNAME"):
        pair = f"{creds['MLFLOW_TRACKING_USERNAME']}:{creds.get('MLFLOW_TRACKING_PASSWORD', '')}"
        return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}
    return {}


def http_probe(tracking_uri: str, *, timeout_s: float, credentials: dict[str, str] | None = None) -> int:
    """One request to the tracking server's REST API, bounded by ``timeout_s``; returns the HTTP status.

    The server counts as reachable when it answers below 500 (a 401 / 403 / 404 is an answer: the MLflow
    calls that follow name the real problem). Connection errors, timeouts and 5xx raise. TLS follows
    MLflow's settings (``MLFLOW_TRACKING_SERVER_CERT_PATH``, ``MLFLOW_TRACKING_INSECURE_TLS``). Nothing
    process-wide is changed: no environment variable, no global session.
    """
    import requests

    insecure = os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("1", "true", "yes")
    verify: bool | str = False if insecure else os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True
    url = f"{tracking_uri.rstrip('/')}/api/2.0/mlflow/experiments/search"
    resp = requests.get(url, params={"max_results": 1}, headers=_probe_headers(credentials), timeout=timeout_s,
                        verify=verify, allow_redirects=True)
    if resp.status_code >= 500:
        raise ConnectionError(f"HTTP {resp.status_code} from {redact_url(url)}")
    return resp.status_code


def check_reachable(
    tracking_uri: str,
    *,
    attempts: int | None = None,
    backoff_s: float | None = None,
    timeout_s: float | None = None,
    probe: Callable[[], Any] | None = None,
    credentials: dict[str, str] | None = None,
) -> int:
    """Probe a remote tracking server with exponential backoff; return the attempts used.

    Local stores (``sqlite:``, ``file:``, paths) are not probed. Each attempt is one HTTP request
    (:func:`http_probe`) with a ``timeout_s`` bound, so the total wait is bounded by roughly
    ``attempts * timeout_s + backoff_s * (2**(attempts-1) - 1)``. Defaults come from
    ``$MLOPS_MLFLOW_CONNECT_ATTEMPTS`` (5), ``$MLOPS_MLFLOW_CONNECT_BACKOFF`` (1 s) and
    ``$MLOPS_MLFLOW_CONNECT_TIMEOUT`` (10 s). ``probe`` replaces the HTTP request (tests).
    Raises :class:`MlflowUnreachableError`.
    """
    if not _is_remote(tracking_uri) and probe is None:
        return 0
    attempts = max(1, int(attempts if attempts is not None else os.environ.get(ENV_CONNECT_ATTEMPTS,
                                                                             DEFAULT_CONNECT_ATTEMPTS)))
    backoff = float(backoff_s if backoff_s is not None else os.environ.get(ENV_CONNECT_BACKOFF,
                                                                         DEFAULT_CONNECT_BACKOFF))
    timeout = float(timeout_s if timeout_s is not None else os.environ.get(ENV_CONNECT_TIMEOUT,
                                                                         DEFAULT_CONNECT_TIMEOUT))
    if probe is None:
        def probe() -> Any:
            return http_probe(tracking_uri, timeout_s=timeout, credentials=credentials)

    last: BaseException | None = None
    for attempt in range(1, attempts + 1):
        try:
            probe()
            if attempt > 1:
                _log.info("MLflow at %s answered on attempt %d", redact_url(tracking_uri), attempt)
            return attempt
        except Exception as e:  # noqa: BLE001 - connection refused / timeout / 5xx: retried
            last = e
            if attempt < attempts:
                delay = backoff * 2 ** (attempt - 1)
                _log.warning("MLflow at %s not reachable (attempt %d/%d: %s); retrying in %.1f s",
                             redact_url(tracking_uri), attempt, attempts, type(e).__name__, delay)
                time.sleep(delay)
    first_line = redact_text(str(last).strip().splitlines()[0][:300]) if last is not None and str(last).strip() else ""
    raise MlflowUnreachableError(
        f"MLflow tracking server {redact_url(tracking_uri)} is not reachable after {attempts} attempts "
        f"({type(last).__name__}: {first_line}). Check that the server runs and the Airflow connection "
        f"(host, port, credentials) points at it; the task can be retried safely (the run is keyed)."
    )


@dataclass(frozen=True)
class TrackingConfig:
    """What a task needs to talk to MLflow. ``credentials`` holds env var names -> secrets."""

    tracking_uri: str
    registry_uri: str | None = None
    artifact_location: str | None = None
    ui_url: str | None = None
    source: str = "fallback"
    credentials: dict[str, str] = field(default_factory=dict, repr=False)

    def public(self) -> dict[str, Any]:
        """JSON-safe view without secrets (for runtime functions, logs and XCom)."""
        return {
            "tracking_uri": self.tracking_uri,
            "registry_uri": self.registry_uri,
            "artifact_location": self.artifact_location,
            "ui_url": self.ui_url,
            "source": self.source,
        }


def split_userinfo(uri: str) -> tuple[str, dict[str, str]]:
    """``http://user:pw@host`` -> (``http://host``, the MLflow basic-auth env of user and password).

    MLflow reads basic-auth credentials from ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD``, so the URI that
    travels to runtime code, logs, XCom and the UI never carries them.
    """
    if not _is_remote(uri):
        return uri, {}
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri, {}
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    creds = {"MLFLOW_TRACKING_USERNAME": unquote(user)} if user else {}
    if password:
        creds["MLFLOW_TRACKING_PASSWORD"] = unquote(password)
    return urlunsplit((parts.scheme, hostport, parts.path, parts.query, parts.fragment)), creds


def _is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def get_or_create_experiment(name: str, artifact_location: str | None, client: Any) -> str:
    """Experiment id of ``name``, creating it (with ``artifact_location``) when missing; race-safe."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=artifact_location))
    except Exception:  # noqa: BLE001 - a concurrent creator won; read its experiment back
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return str(exp.experiment_id)


class MLflowHook(BaseHook):
    """Talks to an MLflow tracking server / model registry (or the embedded sqlite store)."""

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "mlflow"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name, *, home: str | None = None) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id
        self.home = home
        self._config: TrackingConfig | None = None

    # ------------------------------------------------------------------ resolution
    def _lookup_connection(self) -> Any | None:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return self.get_connection(self.mlflow_conn_id)
        except AirflowNotFoundException:
            return None

    def tracking_config(self) -> TrackingConfig:
        """Resolve the connection (or the fallbacks) once per hook instance."""
        if self._config is not None:
            return self._config
        conn = self._lookup_connection()
        if conn is not None and conn.host:
            extras = conn.extra_dejson or {}
            host = str(conn.host)
            if "://" in host or host == "databricks":
                uri = host
                if conn.port and _is_remote(host) and host.count(":") == 1:
                    uri = f"{host.rstrip('/')}:{conn.port}"
            else:
                scheme = extras.get("scheme") or conn.schema or "http"
                uri = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
            uri, creds = split_userinfo(uri)
            if conn.login:
                creds["MLFLOW_TRACKING_USERNAME"] = str(conn.login)
            if conn.password:
                creds["MLFLOW_TRACKING_PASSWORD"] = str(conn.password)
            if extras.get("token"):
                creds["MLFLOW_TRACKING_TOKEN"] = str(extras["token"])
            self._config = TrackingConfig(
                tracking_uri=uri,
                registry_uri=extras.get("registry_uri") or None,
                artifact_location=extras.get("artifact_location") or None,
                ui_url=extras.get("ui_url") or (uri if _is_remote(uri) else None),
                source=f"connection:{self.mlflow_conn_id}",
                credentials=creds,
            )
            self.log.info("MLflow tracking URI from connection %s", self.mlflow_conn_id)
        elif os.environ.get(ENV_TRACKING_URI):
            uri, env_creds = split_userinfo(os.environ[ENV_TRACKING_URI])
            artifact_location = None
            if uri.startswith("sqlite:"):
                # keep artifacts beside the embedded store instead of ./mlruns of the worker's cwd
                db = Path(uri.split(":///", 1)[-1]) if ":///" in uri else None
                if db is not None:
                    artifact_location = (db.parent / "artifacts").resolve().as_uri()
            self._config = TrackingConfig(
                tracking_uri=uri,
                registry_uri=os.environ.get(ENV_REGISTRY_URI) or None,
                artifact_location=artifact_location,
                ui_url=uri if _is_remote(uri) else None,
                source=f"env:{ENV_TRACKING_URI}",
                credentials=env_creds,
            )
        else:
            paths = ModelPaths.for_model("_", self.home)
            self._config = TrackingConfig(
                tracking_uri=paths.mlflow_tracking_uri,
                registry_uri=None,
                artifact_location=paths.mlflow_artifacts.as_uri(),
                source="embedded",
            )
        return self._config

    # ------------------------------------------------------------------ actions
    def configure(self) -> TrackingConfig:
        """Point the ``mlflow`` module of this process at the resolved store (and export credentials)."""
        import mlflow

        from mlops_provider.operator_notes import route_library_logging

        route_library_logging()  # MLflow's INFO lines are not stderr (= ERROR in Airflow's task log)
        cfg = self.tracking_config()
        for key, value in cfg.credentials.items():
            os.environ[key] = value
        if cfg.tracking_uri.startswith("sqlite:///"):
            db = Path(cfg.tracking_uri[len("sqlite:///") :])
            db.parent.mkdir(parents=True, exist_ok=True)
            init_sqlite_store(cfg.tracking_uri, db)
        mlflow.set_tracking_uri(cfg.tracking_uri)
        mlflow.set_registry_uri(cfg.registry_uri or cfg.tracking_uri)
        return cfg

    def wait_until_reachable(self, *, attempts: int | None = None, backoff_s: float | None = None,
                             timeout_s: float | None = None) -> int:
        """:func:`check_reachable` on the resolved tracking URI with its credentials (no-op for local stores).

        Operators call it before handing the resolved settings to runtime code that talks to MLflow.
        """
        cfg = self.tracking_config()
        return check_reachable(cfg.tracking_uri, attempts=attempts, backoff_s=backoff_s, timeout_s=timeout_s,
                               credentials=cfg.credentials)

    def get_client(self) -> Any:
        """An ``mlflow.MlflowClient`` bound to the resolved tracking and registry URIs."""
        from mlflow import MlflowClient

        cfg = self.configure()
        return MlflowClient(tracking_uri=cfg.tracking_uri, registry_uri=cfg.registry_uri or cfg.tracking_uri)

    def get_or_create_experiment(self, name: str) -> str:
        """Experiment id of ``name``; created with the configured artifact location when missing."""
        cfg = self.configure()
        return get_or_create_experiment(name, cfg.artifact_location, self.get_client())

    def run_url(self, run_id: str, experiment_id: str | None = None) -> str:
        """URL of a run a logged-in user can open: the MLflow web UI's page when the connection has one
        (extra ``ui_url``, or an http(s) tracking URI), else the run's page of the MLOps UI plugin."""
        from mlops_provider.links.mlflow import MLflowRunLink

        cfg = self.tracking_config()
        if cfg.ui_url and experiment_id is None:
            experiment_id = self.get_client().get_run(run_id).info.experiment_id
        return MLflowRunLink.url(cfg.ui_url, run_id, experiment_id)

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_client().search_experiments(max_results=1)
        except Exception as e:  # noqa: BLE001 - reported to the UI, not raised
            return False, (f"MLflow at {redact_url(self.tracking_config().tracking_uri)} is not reachable: "
                           f"{redact_text(e)}")
        return True, f"Connected to MLflow at {redact_url(self.tracking_config().tracking_uri)}"

    # ------------------------------------------------------------------ connection form
    # Airflow 3 renders the form from the provider info (mlops_provider.connection_forms).
    _CONN_FIELDS: dict[str, dict[str, Any]] = conn_fields("mlflow")

    @classmethod
    def connection_type_info(cls) -> dict[str, Any]:
        """The ``connection-types`` entry of ``get_provider_info()``."""
        return CONNECTION_TYPES["mlflow"]

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Legacy (FAB) form widgets; Airflow 3's UI renders the provider info's conn-fields."""
        return legacy_form_widgets("mlflow")

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return ui_field_behaviour("mlflow")
