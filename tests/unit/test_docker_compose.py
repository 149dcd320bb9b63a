"""docker/docker-compose.yaml: valid Compose, every Airflow 3 component on the CeleryExecutor, the GPU worker
on queue `gpu` with an NVIDIA reservation, one JWT secret and execution API URL for all, the provider's
connections, MinIO bucket init, health-gated start order, secrets only as placeholders."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from mlops_provider.specs import Connections, TrainingSpec

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "docker-compose.yaml"

AIRFLOW_SERVICES = {"airflow-init", "api-server", "scheduler", "dag-processor", "triggerer",
                    "worker-default", "worker-gpu"}
LONG_RUNNING = AIRFLOW_SERVICES - {"airflow-init"}
# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def schema_file(name: str) -> Path | None:
    """An upstream schema kept outside the repository: $MLOPS_SCHEMA_DIR, shared/schemas, ../shared/schemas."""
    dirs = [os.environ.get("MLOPS_SCHEMA_DIR"), REPO / "shared" / "schemas", REPO.parent / "shared" / "schemas"]
    for d in dirs:
        if d and (Path(d) / name).is_file():
            return Path(d) / name
    return None


def interpolate(value: str) -> str:
    """Compose interpolation with every variable unset: defaults used, required ones get a dummy."""
    def sub(m: re.Match[str]) -> str:
        op, arg = m.group(2), m.group(3)
        return arg if op in (":-", "-") else f"dummy-{m.group(1).lower()}"
    return _INTERP.sub(sub, value).replace("$$", "$")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


@pytest.fixture(scope="module")
def services(compose) -> dict:
    return compose["services"]


def env(service: dict) -> dict[str, str]:
    e = service.get("environment") or {}
    if isinstance(e, list):
        e = dict(item.split("=", 1) for item in e)
    return {k: str(v) for k, v in e.items()}


def command(service: dict) -> list[str]:
    c = service.get("command") or []
    return c.split() if isinstance(c, str) else [str(x) for x in c]


def conn(services: dict, conn_id: str) -> dict:
    raw = env(services["api-server"])[f"AIRFLOW_CONN_{conn_id.upper()}"]
    return json.loads(interpolate(raw))


# -------------------------------------------------------------------------------------------- spec


def _compose_spec() -> dict:
    """The Compose specification's JSON schema: an explicit copy ($MLOPS_SCHEMA_DIR, shared/schemas) wins,
    else the copy check-jsonschema (a dev dependency) vendors from compose-spec/compose-spec."""
    path = schema_file("compose-spec.json")
    if path is not None:
        return dict(json.loads(path.read_text()))
    from importlib.resources import files

    return dict(json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text()))


def test_validates_against_the_compose_specification(compose):
    import jsonschema

    schema = _compose_spec()
    validator = jsonschema.validators.validator_for(schema)(schema)  # the draft the schema declares
    errors = sorted(validator.iter_errors(compose), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.path))}: {e.message}" for e in errors)


def test_every_dollar_is_an_interpolation_or_escaped():
    """A bare `$NAME` is interpolated by Compose on the host (usually to empty): use `$$NAME` or `${NAME}`."""
    text = COMPOSE.read_text()
    rest = _INTERP.sub("", text.replace("$$", ""))
    bad = [ln.strip() for ln in rest.splitlines() if "$" in ln]
    assert not bad, f"unescaped $ in: {bad}"


# ---------------------------------------------------------------------------------------- components


def test_every_component_is_there(services):
    assert AIRFLOW_SERVICES | {"postgres", "redis", "minio", "minio-init", "mlflow"} <= set(services)
    for name, cmd in {"api-server": ["api-server"], "scheduler": ["scheduler"],
                      "dag-processor": ["dag-processor"], "triggerer": ["triggerer"]}.items():
        assert command(services[name]) == cmd, name
    assert "airflow db migrate" in command(services["airflow-init"])[0]
    assert "airflow users create" in command(services["airflow-init"])[0]
    for name in AIRFLOW_SERVICES:
        assert env(services[name])["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name


def _queues(service: dict) -> list[str]:
    cmd = command(service)
    assert cmd[:2] == ["celery", "worker"], cmd
    return cmd[cmd.index("--queues") + 1].split(",")


def test_workers_listen_on_their_queues(services):
    assert _queues(services["worker-default"]) == ["default"]
    gpu = services["worker-gpu"]
    assert _queues(gpu) == [TrainingSpec.__dataclass_fields__["queue"].default] == ["gpu"]
    cmd = command(gpu)
    assert cmd[cmd.index("--concurrency") + 1] == "1"
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu-worker"
    # training stays on the GPU queue (the embedded demo's override must not leak in)
    for name in AIRFLOW_SERVICES:
        assert env(services[name]).get("MLOPS_TRAINING_QUEUE", "gpu") == "gpu", name


def test_gpu_worker_reserves_an_nvidia_device(services):
    devices = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) and int(d.get("count", 0)) >= 1
               for d in devices), devices
    # only the GPU worker asks for one
    assert all("deploy" not in s for n, s in services.items() if n != "worker-gpu")


def test_the_example_models_queue_is_served(services):
    served = {q for n in ("worker-default", "worker-gpu") for q in _queues(services[n])}
    for path in (REPO / "dags").glob("*.yaml"):
        queue = (yaml.safe_load(path.read_text()).get("training") or {}).get("queue", "gpu")
        assert queue in served, f"{path.name}: training.queue {queue!r} has no worker"


# ------------------------------------------------------------------------------- shared configuration


SHARED = ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY", "AIRFLOW__CORE__FERNET_KEY",
          "AIRFLOW__CORE__EXECUTION_API_SERVER_URL", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
          "AIRFLOW__CELERY__BROKER_URL", "AIRFLOW__CELERY__RESULT_BACKEND")


@pytest.mark.parametrize("key", SHARED)
def test_airflow_services_share(services, key):
    values = {name: env(services[name]).get(key) for name in AIRFLOW_SERVICES}
    assert None not in values.values(), f"{key} missing in {[n for n, v in values.items() if v is None]}"
    assert len(set(values.values())) == 1, f"{key} differs: {values}"


def test_jwt_secret_is_required_not_defaulted(services):
    raw = env(services["api-server"])["AIRFLOW__API_AUTH__JWT_SECRET"]
    m = _INTERP.fullmatch(raw)
    assert m and m.group(2) == ":?", f"the JWT secret must be a required variable, got {raw!r}"


def test_execution_api_url_points_at_the_api_server(services):
    url = urlsplit(env(services["api-server"])["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"])
    assert url.hostname == "api-server" and url.path == "/execution/"
    assert command(services[url.hostname]) == ["api-server"]
    published = {p.rsplit(":", 1)[-1] for p in services["api-server"]["ports"]}
    assert str(url.port) in published


# -------------------------------------------------------------------------------------- connections


def test_every_default_connection_of_the_provider_is_defined(services):
    defined = {k[len("AIRFLOW_CONN_"):].lower() for k in env(services["api-server"]) if k.startswith("AIRFLOW_CONN_")}
    needed = {f.default for f in Connections.__dataclass_fields__.values()}
    assert needed <= defined, f"missing AIRFLOW_CONN_* for {sorted(needed - defined)}"


def test_connections_point_at_the_stack(services):
    from mlops_provider.hooks.bentoml import BentoMLHook
    from mlops_provider.hooks.feast import FeastHook
    from mlops_provider.hooks.mlflow import MLflowHook

    mlflow = conn(services, MLflowHook.default_conn_name)
    assert mlflow["conn_type"] == MLflowHook.conn_type
    assert urlsplit(mlflow["host"]).hostname == "mlflow" and "mlflow" in services

    aws = conn(services, "aws_default")
    assert aws["conn_type"] == "aws" and aws["login"] and aws["password"]
    assert urlsplit(aws["extra"]["endpoint_url"]).hostname == "minio"

    feast = conn(services, FeastHook.default_conn_name)
    assert feast["conn_type"] == FeastHook.conn_type
    extra = feast["extra"]
    assert extra["repo_path"] == "/opt/airflow/feature_repo"  # where the images COPY feature_repo
    assert (REPO / "feature_repo" / extra["fs_yaml_file"]).is_file()
    assert urlsplit(extra["registry_path"]).hostname == "postgres"
    assert extra["config_overrides"]["online_store"]["connection_string"].startswith("redis:")

    bento = conn(services, BentoMLHook.default_conn_name)
    assert bento["conn_type"] == BentoMLHook.conn_type
    assert bento["extra"]["bentoml_home"].startswith(env(services["worker-default"])["MLOPS_HOME"])


def test_no_credentials_in_connection_hosts(services):
    for key, raw in env(services["api-server"]).items():
        if key.startswith("AIRFLOW_CONN_"):
            host = json.loads(interpolate(raw)).get("host") or ""
            assert urlsplit(host).password is None, f"{key}: credentials in the host URL"


# ---------------------------------------------------------------------------------- storage + order


def test_minio_bucket_is_created_before_its_users(services):
    init = services["minio-init"]
    assert init["depends_on"]["minio"]["condition"] == "service_healthy"
    script = command(init)[-1]
    assert re.search(r"mc mb --ignore-existing \"store/\$\$MLOPS_BUCKET\"", script)
    assert "mc admin user add" in script and "mc admin policy attach" in script
    bucket_var = env(init)["MLOPS_BUCKET"]
    assert env(services["mlflow"])["MLFLOW_ARTIFACTS_DESTINATION"].startswith(f"s3://{bucket_var}/")
    for name in ("mlflow", "worker-default", "worker-gpu"):
        assert services[name]["depends_on"]["minio-init"]["condition"] == "service_completed_successfully", name


def test_postgres_creates_every_database_the_stack_uses(services):
    init = (DOCKER / "postgres" / "init-databases.sh").read_text()
    created = set(re.findall(r"^create \S+ (\S+) ", init, re.M))
    assert any(v.endswith(":/docker-entrypoint-initdb.d/10-init-databases.sh:ro") and
               v.startswith("./postgres/init-databases.sh") for v in services["postgres"]["volumes"])
    urls = [env(services["api-server"])["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"],
            env(services["mlflow"])["MLFLOW_BACKEND_STORE_URI"],
            conn(services, "feast_default")["extra"]["registry_path"]]
    used = {urlsplit(interpolate(u)).path.lstrip("/") for u in urls}
    assert used == {"airflow", "mlflow", "feast_registry"} and used <= created


def test_start_order_is_health_gated(services):
    for name in LONG_RUNNING:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    for name, service in services.items():
        assert name in {"airflow-init", "minio-init"} or "healthcheck" in service, f"{name} has no healthcheck"
        for dep, cond in (service.get("depends_on") or {}).items():
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep} to be healthy; it has no check"


def test_workers_share_mlops_home(services):
    for name in AIRFLOW_SERVICES:
        assert f"mlops-home:{env(services[name])['MLOPS_HOME']}" in services[name]["volumes"], name


# ------------------------------------------------------------------------------------------ secrets


_SECRET = re.compile(r"PASSWORD|SECRET|FERNET|TOKEN|ACCESS_KEY|REDISCLI_AUTH")


def test_secrets_are_required_variables_never_literals(services):
    for name, service in services.items():
        for key, value in env(service).items():
            if _SECRET.search(key):
                m = _INTERP.fullmatch(value)
                assert m and m.group(2) == ":?", f"{name}.{key} must be ${{VAR:?...}}, not {value!r}"
            for part in ("SQL_ALCHEMY_CONN", "BROKER_URL", "RESULT_BACKEND", "STORE_URI"):
                if part in key:
                    secret = urlsplit(value.removeprefix("db+")).password or ""
                    assert not secret or _INTERP.fullmatch(secret), f"{name}.{key}: literal password"


def test_env_example_lists_every_required_variable_with_placeholders():
    text = "\n".join(ln for ln in COMPOSE.read_text().splitlines() if not ln.lstrip().startswith("#"))
    required = {m.group(1) for m in _INTERP.finditer(text) if m.group(2) == ":?"}
    example = {}
    for line in (DOCKER / ".env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            example[key] = value
    assert required <= set(example), f"missing from .env.example: {sorted(required - set(example))}"
    for key, value in example.items():
        if _SECRET.search(key) and not key.endswith("ACCESS_KEY"):
            assert value == "CHANGE-ME", f".env.example {key} must be a placeholder"
