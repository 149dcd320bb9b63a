"""Fixtures of the UI plugin tests (imported explicitly): Airflow's real auth manager and a crafted registry.

``airflow_auth`` initializes the simple auth manager of this test session's AIRFLOW_HOME (users ``admin``
and ``viewer``) with a JWT secret and the one metadata table token checks read (``revoked_token``), so the
plugin's routes run the same authentication as under the API server. ``ui_state`` builds, under a
temporary MLOPS_HOME, what the pipelines leave behind: an MLflow registry (sqlite) with a promoted
champion, a gate-rejected and a human-rejected version (tags as the operators write them), a force-promote,
the verdict files, the model card artifacts, drift report JSON/HTML, a validation report and a deployment
state.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from ui_fixtures import MODEL, craft_ui_state  # noqa: F401 - MODEL re-exported to the tests


@dataclass
class Auth:
    admin: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin}"}


@pytest.fixture(scope="module")
def airflow_auth() -> Iterator[Auth]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "ui-tests-" + "0123456789abcdef" * 4)
        mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin,viewer:viewer")
        from airflow import settings
        from airflow.api_fastapi.app import create_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
        from airflow.models.revoked_token import RevokedToken

        RevokedToken.metadata.create_all(settings.engine, tables=[RevokedToken.__table__])
        am = create_auth_manager()
        am.init()
        yield Auth(admin=am.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin")))


def ui_client() -> Any:
    from fastapi.testclient import TestClient

    from mlops_provider.ui.app import app

    return TestClient(app)


@pytest.fixture(scope="module")
def ui_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A registry + reports as the pipelines write them, under a module-wide MLOPS_HOME."""
    home = tmp_path_factory.mktemp("ui-home")
    tmp = tmp_path_factory.mktemp("ui-tmp")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield craft_ui_state(home, tmp)
        os.environ.pop("MLFLOW_TRACKING_URI", None)
