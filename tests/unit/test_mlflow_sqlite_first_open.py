"""Several tasks opening a fresh embedded (``sqlite:///``) MLflow store at once all succeed.

MLflow creates a fresh SQLite store's tables in whichever process opens it first; two processes doing it at
once race (``duplicate column name: step``): the demo's two scheduled monitor runs did, right after start-up.
``MLflowHook.configure`` initializes the store under a file lock (``init_sqlite_store``). Without the lock,
four concurrent plain ``MlflowClient`` openers here fail in most runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CODE = (
    "from mlops_provider.hooks.mlflow import MLflowHook\n"
    "c = MLflowHook().get_client()\n"
    "c.search_experiments(); c.search_registered_models(max_results=1)\n"
    "print('opened')\n"
)


def test_concurrent_first_opens_of_an_embedded_store_all_succeed(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLOPS_HOME"] = str(tmp_path / "home")
    procs = [subprocess.Popen([sys.executable, "-c", CODE], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outs = [p.communicate(timeout=300) for p in procs]
    failed = [err[-800:] for p, (out, err) in zip(procs, outs, strict=True) if p.returncode or "opened" not in out]
    assert not failed, failed
    assert (tmp_path / "home" / "mlflow" / "mlflow.db").is_file()
