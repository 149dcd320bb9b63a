"""BentoML operators: package the champion, deploy it on loopback, smoke-test it (light module).

bentoml / mlflow / httpx are imported inside ``execute()`` through :mod:`mlops_provider.runtime.serving`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.links.bentoml import BENTO_ENDPOINT_XCOM_KEY, BentoEndpointLink


def _set_outlet_extras(operator: BaseOperator, context: Context, extra: dict[str, Any]) -> None:
    """Attach ``extra`` to the asset events of the operator's outlets (if any)."""
    outlets = getattr(operator, "outlets", None) or []
    if not outlets:
        return
    events = context["outlet_events"]
    for outlet in outlets:
        events[outlet].extra = dict(extra)


class BentoPackageOperator(BaseOperator):
    """Import ``models:/<model_name>@<alias>`` into BentoML and build the serving bento.

    Idempotent: the BentoML model tag is derived from the MLflow version (``flights_delay:v3``) and
    the bento tag from the version plus a hash of the service config and code; existing ones are
    reused, so a re-run builds nothing. ``features`` = ``{"categorical": [...], "numeric": [...]}``
    (the YAML's ``model.features``).

    Returns ``{"bento_tag", "model_tag", "model_version", "mlflow_run_id", "bento_created",
    "model_created", "bentoml_home"}``.
    """

    template_fields: Sequence[str] = ("model_name", "alias", "feature_repo", "feature_service", "inference_log_dir")
    ui_color = "#fddb3a"

    def __init__(
        self,
        *,
        model_name: str,
        alias: str = "champion",
        feature_repo: str,
        feature_service: str,
        features: dict[str, list[str]],
        inference_log_dir: str,
        request_fields: list[str] | None = None,
        threshold: float = 0.5,
        mlflow_conn_id: str = "mlflow_default",
        bentoml_conn_id: str = "bentoml_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.alias = alias
        self.feature_repo = feature_repo
        self.feature_service = feature_service
        self.features = features
        self.inference_log_dir = inference_log_dir
        self.request_fields = request_fields
        self.threshold = threshold
        self.mlflow_conn_id = mlflow_conn_id
        self.bentoml_conn_id = bentoml_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.bentoml import BentoMLHook
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.runtime.serving import package_bento

        tracking = MLflowHook(self.mlflow_conn_id).configure()
        home = BentoMLHook(self.bentoml_conn_id).bentoml_home
        self.log.info(
            "Packaging %s@%s from %s into BentoML store %s",
            self.model_name, self.alias, tracking.tracking_uri, home,
        )
        result = package_bento(
            self.model_name,
            self.alias,
            tracking.tracking_uri,
            self.feature_repo,
            self.feature_service,
            self.features,
            self.inference_log_dir,
            mlflow_registry_uri=tracking.registry_uri,
            bentoml_home_dir=home,
            request_fields=self.request_fields,
            threshold=self.threshold,
        )
        self.log.info(
            "Bento %s (model %s, MLflow version %s)%s",
            result["bento_tag"], result["model_tag"], result["model_version"],
            " built" if result["bento_created"] else " already built: nothing to do",
        )
        return {**result, "bentoml_home": home}


class BentoDeployOperator(BaseOperator):
    """Serve a bento with ``bentoml serve`` on loopback, blue/green on ``port`` / ``port + 1``.

    The new server must answer ``/readyz`` within ``ready_timeout`` (and, when ``smoke_request`` is
    given, return a valid prediction for it) before the state switches to it and the previous
    deployment is stopped; otherwise it is killed, the previous one keeps serving and the task
    fails with ``DeploymentError``. Deploying the tag that is already serving is a no-op.

    Returns ``{"url", "pid", "bento_tag", "host", "port", "log_file", "changed",
    "previous_bento_tag"}`` and pushes the URL for the "BentoML endpoint" link.
    """

    template_fields: Sequence[str] = ("bento_tag", "state_dir", "host")
    operator_extra_links = (BentoEndpointLink(),)
    ui_color = "#fddb3a"

    def __init__(
        self,
        *,
        bento_tag: str,
        host: str = "127.0.0.1",
        port: int = 3000,
        state_dir: str,
        ready_timeout: float = 120,
        smoke_request: dict[str, Any] | None = None,
        bentoml_conn_id: str = "bentoml_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bento_tag = bento_tag
        self.host = host
        self.port = port
        self.state_dir = state_dir
        self.ready_timeout = ready_timeout
        self.smoke_request = smoke_request
        self.bentoml_conn_id = bentoml_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.bentoml import BentoMLHook
        from mlops_provider.runtime.serving import deploy_local

        hook = BentoMLHook(self.bentoml_conn_id)
        result = deploy_local(
            self.bento_tag,
            host=self.host,
            port=int(self.port),
            state_dir=self.state_dir,
            timeout=float(self.ready_timeout),
            bentoml_home_dir=hook.bentoml_home,
            smoke_request=self.smoke_request,
        )
        previous = result.pop("previous", None) or {}
        result["previous_bento_tag"] = previous.get("bento_tag")
        context["ti"].xcom_push(key=BENTO_ENDPOINT_XCOM_KEY, value=result["url"])
        self.log.info(
            "%s serving at %s (pid %s)%s",
            result["bento_tag"], result["url"], result["pid"],
            f"; replaced {result['previous_bento_tag']}" if result["previous_bento_tag"] else "",
        )
        _set_outlet_extras(self, context, {"bento_tag": result["bento_tag"], "url": result["url"]})
        return result


class BentoSmokeTestOperator(BaseOperator):
    """POST ``request`` to ``<url>/predict`` over HTTP; fail with ``DeploymentError`` on a bad answer.

    A bad answer is a non-2xx status, a missing probability, NaN or a value outside [0, 1].
    Returns the first prediction ``{"request_id", "model_version", "probability", "delayed"}``.
    """

    template_fields: Sequence[str] = ("url", "request")
    template_fields_renderers = {"request": "json"}
    ui_color = "#fddb3a"

    def __init__(
        self,
        *,
        url: str,
        request: dict[str, Any],
        timeout: float = 30,
        bentoml_conn_id: str = "bentoml_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.request = request
        self.timeout = timeout
        self.bentoml_conn_id = bentoml_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.bentoml import BentoMLHook
        from mlops_provider.runtime.serving import smoke_test

        url = self.url or BentoMLHook(self.bentoml_conn_id).url or ""
        headers = BentoMLHook(self.bentoml_conn_id).headers()
        response = smoke_test(url, self.request, timeout=float(self.timeout), headers=headers)
        self.log.info("Smoke test of %s: %s", url, response)
        _set_outlet_extras(self, context, {"url": url, "model_version": response.get("model_version")})
        return response
