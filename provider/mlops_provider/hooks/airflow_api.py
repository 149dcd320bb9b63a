"""AirflowApiHook: the Airflow REST API as a task sees it (for DAG run notes; light module).

Connection ``airflow_api_default`` (any type, e.g. ``http``): ``host`` = the API server's base URL
(``http://airflow-api-server:8080``; a bare host name is combined with ``schema`` and ``port``),
``login`` / ``password`` = a user allowed to edit DAG runs (a token is requested from ``/auth/token``,
which the simple and the FAB auth managers serve), or extra ``token`` = a pre-issued JWT.
``python -m mlops_provider.embedded`` defines it for the embedded Airflow.

Without the connection nothing is called (the note is only logged). httpx is imported lazily.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from airflow.sdk import BaseHook

from mlops_provider.redact import redact_text, redact_url


class AirflowApiHook(BaseHook):
    """Calls Airflow's public REST API (v2) with the connection's credentials."""

    conn_name_attr = "airflow_api_conn_id"
    default_conn_name = "airflow_api_default"
    hook_name = "Airflow REST API"

    def __init__(self, airflow_api_conn_id: str = default_conn_name, *, timeout: float = 10.0) -> None:
        super().__init__()
        self.airflow_api_conn_id = airflow_api_conn_id
        self.timeout = timeout

    def _connection(self) -> Any | None:
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            return self.get_connection(self.airflow_api_conn_id)
        except AirflowNotFoundException:
            return None

    @staticmethod
    def base_url(conn: Any) -> str:
        host = str(conn.host or "").rstrip("/")
        if "://" not in host:
            host = f"{conn.schema or 'http'}://{host}" + (f":{conn.port}" if conn.port else "")
        return host

    def client(self) -> Any | None:
        """An ``httpx.Client`` on ``<base>/api/v2`` with a bearer token, or None without a connection."""
        import httpx

        conn = self._connection()
        if conn is None or not conn.host:
            self.log.info("no connection %r: the Airflow REST API is not called", self.airflow_api_conn_id)
            return None
        base = self.base_url(conn)
        token = (conn.extra_dejson or {}).get("token")
        if not token:
            r = httpx.post(f"{base}/auth/token", json={"username": conn.login, "password": conn.password},
                           timeout=self.timeout)
            if r.status_code >= 400:
                raise PermissionError(f"{redact_url(base)}/auth/token answered {r.status_code} for user "
                                      f"{conn.login!r} (connection {self.airflow_api_conn_id})")
            token = r.json()["access_token"]
        return httpx.Client(base_url=f"{base}/api/v2", timeout=self.timeout,
                            headers={"Authorization": f"Bearer {token}"})

    def set_dag_run_note(self, dag_id: str, run_id: str, note: str,
                         merge: Callable[[str | None, str], str] | None = None) -> bool:
        """PATCH the run's note (``merge(current, note)`` decides the text); False without a connection."""
        client = self.client()
        if client is None:
            return False
        path = f"/dags/{dag_id}/dagRuns/{run_id}"
        with client:
            text = note
            if merge is not None:
                current = client.get(path)
                current.raise_for_status()
                text = merge(current.json().get("note"), note)
            r = client.patch(path, params={"update_mask": "note"}, json={"note": text})
            if r.status_code >= 400:
                raise RuntimeError(f"PATCH {path} answered {r.status_code}: {redact_text(r.text[:300])}")
        return True

    def test_connection(self) -> tuple[bool, str]:
        try:
            client = self.client()
            if client is None:
                return False, f"connection {self.airflow_api_conn_id!r} is not defined"
            with client:
                r = client.get("/monitor/health")
            return r.status_code == 200, f"health answered {r.status_code}"
        except Exception as e:  # noqa: BLE001 - reported to the UI
            return False, redact_text(e)
