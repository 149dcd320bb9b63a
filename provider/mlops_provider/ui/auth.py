"""Airflow's authentication and DAG permissions for the plugin's routes (lazy imports of Airflow's API).

Airflow 3.3 mounts a plugin's FastAPI app under the API server as it is: nothing protects it unless the
app asks. :func:`require_user` is the same check the REST API makes (``airflow.api_fastapi.core_api.
security.get_user``: the ``Authorization: Bearer`` token, else the UI's ``_token`` cookie, resolved by the
configured auth manager): no or a bad credential is a 401 before any handler runs, so an anonymous request
never reads a YAML, a report or MLflow. :func:`can_read_dag` asks the auth manager whether the user may
read a DAG (the model pages need read access to the model's DAGs).
"""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException, Request


async def require_user(request: Request) -> Any:
    """The authenticated Airflow user of the request (401 without valid credentials)."""
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    credentials = await bearer_scheme(request)
    try:
        user = await get_user(request, None, credentials)
    except HTTPException as e:
        if e.status_code == 403:  # an invalid/forged token is "not authenticated" for this app
            raise HTTPException(status_code=401, detail="Not authenticated",
                                headers={"WWW-Authenticate": "Bearer"}) from e
        raise
    request.state.mlops_user = user
    return user


def can_read_dag(user: Any, dag_id: str, *, runs: bool = False) -> bool:
    """Whether ``user`` may read ``dag_id`` (and its runs), per the configured auth manager."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    try:
        return bool(get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.RUN if runs else None,
            details=DagDetails(id=dag_id), user=user))
    except Exception:  # noqa: BLE001 - fail closed
        return False


def user_name(user: Any) -> str:
    for attr in ("get_name", "get_id"):
        fn = getattr(user, attr, None)
        if callable(fn):
            try:
                return str(fn())
            except Exception:  # noqa: BLE001
                continue
    return str(user)
