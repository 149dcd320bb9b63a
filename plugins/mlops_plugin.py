"""Airflow UI plugin: the "MLOps" page and the routes the provider's extra links open.

Served by Airflow's API server under ``/mlops`` (:mod:`mlops_provider.ui.app`, a FastAPI app behind
Airflow's own authentication) and linked from the navigation bar as "MLOps". Module level stays light:
FastAPI ships with Airflow; MLflow, the object store and Airflow's API security are imported per request.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from mlops_provider.ui.app import app


class MlopsPlugin(AirflowPlugin):
    name = "mlops"
    fastapi_apps = [{"app": app, "url_prefix": "/mlops", "name": "MLOps"}]
    external_views = [{"name": "MLOps", "href": "/mlops/", "destination": "nav", "url_route": "mlops"}]
