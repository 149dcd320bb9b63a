"""The plugin's FastAPI app (mounted by Airflow's API server under ``/mlops``).

Routes (every one behind :func:`~mlops_provider.ui.auth.require_user`, then the model's DAG permission):

- ``GET /``: the MLOps page (every model you may read: versions, gate decisions and their checks, aliases
  and who moved them, metric charts, training runs with their notes, drift and live performance, endpoint);
- ``GET /models/{model}``: the same for one model;
- ``GET /models/{model}/versions/{version}/verdict`` (``?format=json``), ``.../card``: the gate's verdict and
  the model card (the report file, else the run's MLflow artifacts, local or s3://);
- ``GET /models/{model}/reports/{kind}/{name}``: a drift / validation / gate / infra-validation report file;
- ``GET /models/{model}/endpoint``: the live endpoint, its ``/readyz`` and ``/health``;
- ``GET /runs/{run_id}``: an MLflow run (params, metrics, tags) for stores without a web UI;
- ``GET /api/models``: JSON summary; ``GET /docs`` (offline, server-rendered) and ``GET /openapi.json``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from mlops_provider.ui import pages
from mlops_provider.ui.auth import can_read_dag, require_user, user_name
from mlops_provider.ui.data import REPORT_KINDS, RequestData

app = FastAPI(
    title="airflow-provider-mlops",
    description="The MLOps page and the artifacts behind the provider's extra links.",
    docs_url=None,  # FastAPI's docs load Swagger UI from a CDN: /docs below is rendered here, offline
    redoc_url=None,
    openapi_url=None,  # served below, behind authentication like every route
    dependencies=[Depends(require_user)],
)

_MEDIA = {"html": "text/html; charset=utf-8", "json": "application/json", "md": "text/markdown; charset=utf-8",
          "txt": "text/plain; charset=utf-8"}


def _prefix(request: Request) -> str:
    return str(request.scope.get("root_path") or "").rstrip("/")


def _base(request: Request) -> str:
    """Airflow's own base path (the plugin's mount prefix without ``/mlops``)."""
    prefix = _prefix(request)
    return prefix[: -len("/mlops")] if prefix.endswith("/mlops") else ""


def _readable_models(request: Request, data: RequestData) -> list[str]:
    user = request.state.mlops_user
    return [m for m, cfg in sorted(data.configs().items()) if can_read_dag(user, cfg.dag_id("training"))]


def _model(request: Request, data: RequestData, model: str) -> Any:
    cfg = data.config(model)
    if cfg is None:
        raise HTTPException(404, f"no pipeline config for model {model!r}")
    if not can_read_dag(request.state.mlops_user, cfg.dag_id("training")):
        raise HTTPException(403, "Forbidden")
    return cfg


def _not_found(request: Request, title: str, message: str) -> HTMLResponse:
    return HTMLResponse(pages.message_page(title, message, _prefix(request)), status_code=404)


@app.get("/", response_class=HTMLResponse, summary="The MLOps page")
def index(request: Request) -> HTMLResponse:
    data = RequestData()
    models = _readable_models(request, data)
    return HTMLResponse(pages.index(data, models, _base(request), _prefix(request),
                                    user_name(request.state.mlops_user)))


@app.get("/models/{model}", response_class=HTMLResponse, summary="One model's page")
def model_page(request: Request, model: str) -> HTMLResponse:
    data = RequestData()
    _model(request, data, model)
    body = (f"<p><a href='{_prefix(request)}/'>← MLOps</a></p>"
            + pages.model_section(data, model, _base(request), _prefix(request)))
    return HTMLResponse(pages.page(f"MLOps: {model}", body))


@app.get("/models/{model}/versions/{version}/verdict", summary="The gate's verdict of a version")
def verdict(request: Request, model: str, version: str, format: str = "html") -> Response:
    data = RequestData()
    _model(request, data, model)
    full = data.verdict(model, version)
    if full is None:
        return _not_found(request, "No gate verdict", f"{model} v{version} has no gate verdict (not gated yet, or "
                          "its report is on another host and not in MLflow).")
    if format == "json":
        return JSONResponse(full)
    return HTMLResponse(pages.verdict_page(model, version, full, data.version(model, version), _prefix(request)))


@app.get("/models/{model}/versions/{version}/card", response_class=HTMLResponse, summary="A version's model card")
def model_card(request: Request, model: str, version: str) -> Response:
    data = RequestData()
    cfg = _model(request, data, model)
    mv = data.version(model, version)
    html = data.read_run_artifact(cfg, mv["run_id"], "gate/model_card.html") if mv else None
    if html is None:
        return _not_found(request, "No model card", f"{model} v{version} has no model card yet (the gate writes it).")
    return Response(html, media_type=_MEDIA["html"])


@app.get("/models/{model}/reports/{kind}/{name}", summary="A report file (drift, validation, gate, infra validation)")
def report(request: Request, model: str, kind: str, name: str) -> Response:
    data = RequestData()
    cfg = _model(request, data, model)
    if kind not in REPORT_KINDS:
        raise HTTPException(404, f"unknown report kind {kind!r} (one of {', '.join(REPORT_KINDS)})")
    body = data.read_report(cfg, kind, name)
    if body is None:
        return _not_found(request, "No such report", f"{kind} report {name!r} of {model} does not exist (yet).")
    ext = name.rsplit(".", 1)[-1].lower()
    return Response(body, media_type=_MEDIA.get(ext, "application/octet-stream"))


@app.get("/models/{model}/endpoint", response_class=HTMLResponse, summary="The live endpoint and its health")
def endpoint(request: Request, model: str) -> HTMLResponse:
    data = RequestData()
    _model(request, data, model)
    return HTMLResponse(pages.endpoint_page(model, data.endpoint(model), _prefix(request)))


@app.get("/runs/{run_id}", response_class=HTMLResponse, summary="An MLflow run (params, metrics, tags)")
def run(request: Request, run_id: str) -> Response:
    data = RequestData()
    for model in _readable_models(request, data):
        cfg = data.config(model)
        client, _ = data.client(cfg)
        if client is None:
            continue
        try:
            found = client.get_run(run_id)
            experiment = client.get_experiment(found.info.experiment_id)
        except Exception:  # noqa: BLE001 - not in this store
            continue
        if experiment is not None and experiment.name != model:
            continue  # a run of another model's experiment: checked against that model's permission
        return HTMLResponse(pages.run_page(found, _prefix(request)))
    return _not_found(request, "No such run", f"MLflow run {run_id!r} is not a run of a model you may read.")


@app.get("/api/models", summary="Every model you may read, as JSON")
def models(request: Request) -> list[dict[str, Any]]:
    data = RequestData()
    out = []
    for m in _readable_models(request, data):
        cfg = data.configs()[m]
        reg = data.registry(m)
        champ = reg["aliases"].get("champion")
        mv = data.version(m, champ) if champ else None
        drift = data.drift_reports(m)
        out.append({
            "model": m,
            "dags": [cfg.dag_id(k) for k in ("features", "training", "deploy", "monitor")],
            "feature_service": cfg.features.feature_service,
            "champion": {"version": champ, "run_id": mv["run_id"] if mv else None,
                         "gate": mv["tags"].get("gate.decision") if mv else None,
                         "decision": mv["decision"] if mv else None},
            "versions": [{"version": v["version"], "decision": v["decision"], "aliases": v["aliases"]}
                         for v in reg["versions"]],
            "endpoint": data.endpoint(m).get("url"),
            "latest_drift_report": drift[0]["name"] if drift else None,
            "registry_error": reg["error"],
        })
    return out


@app.get("/openapi.json", include_in_schema=False)
def openapi() -> JSONResponse:
    return JSONResponse(app.openapi())


@app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    return HTMLResponse(pages.docs_page(app.openapi(), _prefix(request)))
