"""The provider's Airflow UI plugin: the MLOps page and the routes extra links open (served under ``/mlops``).

``plugins/mlops_plugin.py`` registers :data:`mlops_provider.ui.app.app` with Airflow's API server. Every
route requires Airflow's authentication (the same JWT cookie or bearer token as the REST API) and the
DAG read permission of the model it shows. Light at import: FastAPI/Starlette only; Airflow's API
security, MLflow, httpx and the object store are imported inside the request handlers.
"""
