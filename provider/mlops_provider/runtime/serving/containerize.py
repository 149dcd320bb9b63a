"""Build a container image of a bento with ``bentoml containerize`` (runtime module).

:func:`containerize` is idempotent (an existing image is reused) and raises
:class:`~mlops_provider.exceptions.ContainerEngineUnavailable` when no Docker engine answers, so the
task can skip with the reason and the command to run where an engine exists.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import DeploymentError

log = logging.getLogger(__name__)


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
