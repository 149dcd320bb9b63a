"""BentoML operators: package the champion, infra-validate it, deploy it (local blue/green, Kubernetes,
BentoCloud), verify the live version, smoke-test it, containerize it; offline batch scoring (light module).

Each ``execute()`` resolves its hooks (BentoML store and endpoint, MLflow, object storage, BentoCloud,
Kubernetes) and calls one entry point of :mod:`mlops_provider.runtime.serving`, imported there, so
bentoml / mlflow / httpx never load when a DAG file is parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.hooks.kubernetes import kubernetes_api_client
from mlops_provider.links.bentoml import BentoEndpointLink
from mlops_provider.operators import default_deferrable

__all__ = [
    "BatchPredictOperator", "BentoContainerizeOperator", "BentoDeployOperator", "BentoInfraValidateOperator",
    "BentoPackageOperator", "BentoSmokeTestOperator", "kubernetes_api_client",
]


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

    Idempotent: the BentoML model tag is derived from the MLflow version (``<model>:v3``) and
    the bento tag from the version plus a hash of the service config and code; existing ones are
    reused, so a re-run builds nothing. ``features`` = ``{"categorical": [...], "numeric": [...]}``
    (the YAML's ``model.features``). ``serving`` (the YAML's ``serving`` section as a dict) shapes the
    endpoint: the request schema is generated from the feature service and ``serving.request``, the smoke
    request is validated against it here, the sample requests come from the version's evaluation snapshot
    (read through ``aws_conn_id`` when on ``s3://``). ``challenger_alias`` + ``experiment`` (``{"mode":
    "shadow" | "split", "share", "route_by"}``) put the challenger in the same bento for an online
    experiment; ``limits`` overrides the service's request limits (``serving.limits``).

    Returns ``{"bento_tag", "model_tag", "model_version", "mlflow_run_id", "bento_created",
    "model_created", "challenger", "smoke_request", "task", "request_model", "bentoml_home"}``.
    """

    template_fields: Sequence[str] = (
        "model_name", "alias", "feature_repo", "feature_service", "inference_log_dir", "snapshot",
    )
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
        threshold: float | None = None,
        challenger_alias: str | None = None,
        experiment: dict[str, Any] | None = None,
        limits: dict[str, Any] | None = None,
        log_flush_interval_s: float | None = None,
        serving: dict[str, Any] | None = None,
        snapshot: str | None = None,
        mlflow_conn_id: str = "mlflow_default",
        bentoml_conn_id: str = "bentoml_default",
        aws_conn_id: str | None = "aws_default",
        feast_conn_id: str | None = "feast_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.feast_conn_id = feast_conn_id
        self.serving = serving
        self.snapshot = snapshot
        self.aws_conn_id = aws_conn_id
        self.challenger_alias = challenger_alias
        self.experiment = experiment
        self.limits = limits
        self.log_flush_interval_s = log_flush_interval_s
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

    def _feast(self) -> dict[str, Any]:
        """``package_bento``'s Feast arguments from the feast connection (none without one)."""
        from mlops_provider.hooks.feast import FeastHook
        from mlops_provider.runtime.features.store import open_store

        if not self.feast_conn_id:
            return {}
        settings = FeastHook(self.feast_conn_id, repo_path=self.feature_repo).store_settings(self.feature_repo)
        return {"feature_store_yaml": settings["fs_yaml_file"], "feast_overrides": settings["overrides"],
                "feast_online_store_password": settings["online_store_password"],
                "feature_store": open_store(**settings)}

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.bentoml import BentoMLHook
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.operators import object_store
        from mlops_provider.runtime.serving.package import package_bento
        from mlops_provider.specs import ServingSpec, from_dict

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
            challenger_alias=self.challenger_alias,
            experiment=self.experiment,
            limits=self.limits,
            log_flush_interval_s=self.log_flush_interval_s,
            serving=from_dict(ServingSpec, self.serving) if self.serving else None,
            snapshot=self.snapshot or None,
            store=object_store(self.aws_conn_id),
            # the Feast YAML the served process opens (bundled in the bento), the registry / online store
            # overrides applied to it and the registry the request schema is read from: the feast
            # connection's, the same as every other task's
            **self._feast(),
        )
        if result.get("challenger"):
            self.log.info("Online experiment: %s", result["challenger"])
        self.log.info(
            "Bento %s (model %s, MLflow version %s)%s",
            result["bento_tag"], result["model_tag"], result["model_version"],
            " built" if result["bento_created"] else " already built: nothing to do",
        )
        return {**result, "bentoml_home": home}


class BentoInfraValidateOperator(BaseOperator):
    """Serve the bento on a free loopback port and validate it before it is deployed.

    Waits for ``/readyz``, replays the MLflow input example and a sample of the evaluation snapshot
    (the version's ``snapshot_path`` tag, or ``snapshot``), checks the response schema, that the
    predictions equal the registered model's own (pyfunc) predictions within ``tolerance``, and that
    the single-row latency quantile is within ``latency_budget_ms``; always stops the server. Fails
    with ``InfraValidationError`` (the report lists every failed check); returns the report.
    """

    template_fields: Sequence[str] = ("bento_tag", "snapshot", "report_dir")
    ui_color = "#fddb3a"

    def __init__(
        self,
        *,
        bento_tag: str,
        snapshot: str | None = None,
        sample_rows: int = 20,
        tolerance: float = 1e-5,
        latency_budget_ms: float = 1000.0,
        latency_quantile: float = 0.95,
        ready_timeout: float = 180,
        report_dir: str | None = None,
        mlflow_conn_id: str = "mlflow_default",
        bentoml_conn_id: str = "bentoml_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bento_tag = bento_tag
        self.snapshot = snapshot
        self.sample_rows = sample_rows
        self.tolerance = tolerance
        self.latency_budget_ms = latency_budget_ms
        self.latency_quantile = latency_quantile
        self.ready_timeout = ready_timeout
        self.report_dir = report_dir
        self.mlflow_conn_id = mlflow_conn_id
        self.bentoml_conn_id = bentoml_conn_id
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.bentoml import BentoMLHook
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.operators import object_store
        from mlops_provider.runtime.serving.infra_validation import infra_validate

        tracking = MLflowHook(self.mlflow_conn_id).configure()
        report = infra_validate(
            self.bento_tag,
            bentoml_home_dir=BentoMLHook(self.bentoml_conn_id).bentoml_home,
            mlflow_tracking_uri=tracking.tracking_uri,
            mlflow_registry_uri=tracking.registry_uri,
            snapshot=self.snapshot or None,
            sample_rows=int(self.sample_rows),
            tolerance=float(self.tolerance),
            latency_budget_ms=float(self.latency_budget_ms),
            latency_quantile=float(self.latency_quantile),
            ready_timeout=float(self.ready_timeout),
            report_dir=self.report_dir or None,
            store=object_store(self.aws_conn_id),
        )
        self.log.info(
            "Bento %s passed infra validation: replayed %s, max |diff| %s, latency %s",
            self.bento_tag, report["replayed"], report.get("max_abs_diff"), report.get("latency_ms"),
        )
        return report


class BentoDeployOperator(BaseOperator):
    """Deploy a bento to ``target`` and verify the live version the endpoint reports.

    - ``local``: one stable URL, ``http://host:port``: a small front proxy there forwards to the live
      version, which runs ``bentoml serve`` on a free loopback port (blue/green). The new server
      must answer ``/readyz`` within ``ready_timeout``, answer the smoke request and report the
      deployed bento on ``/health`` before the state switches to it; the previous one drains
      ``drain_seconds`` and stops. Otherwise the new one is killed, the previous one keeps serving and
      the task fails with ``DeploymentError`` giving the reason. Re-deploying the tag that is already
      serving is a no-op. ``smoke_request``: a request, ``{}`` for the one bundled in the bento (the
      YAML's, else a row of the evaluation snapshot), None for none. ``front_port`` is deprecated
      (when set, the front listens there instead of on ``port``).
    - ``kubernetes``: Deployment / Service / HPA (readiness + liveness probes, ``maxUnavailable: 0``)
      rendered from ``kubernetes`` (the YAML's ``serving.kubernetes``), validated against the API
      models and written under ``state_dir``; applied through the cncf.kubernetes ``KubernetesHook``
      when ``kubernetes.conn_id`` exists, render-only otherwise.
    - ``bentocloud``: BentoML's deployment API (``bentocloud`` = the YAML's ``serving.bentocloud``).

    After the deploy the endpoint's ``/health`` must report the deployed bento tag, else
    ``LiveVersionMismatch`` (a silent rollback). Returns ``{"target", "url", "bento_tag", "changed",
    "previous_bento_tag", "live", ...}`` and pushes the URL for the "BentoML endpoint" link.

    ``deferrable`` (default: Airflow's ``[operators] default_deferrable``): a remote target's waits run in
    the triggerer instead of a worker slot: the task applies / creates-or-updates, then defers to
    :class:`~mlops_provider.triggers.serving.KubernetesRolloutTrigger` (up to 600 s) or
    :class:`~mlops_provider.triggers.serving.BentoCloudDeploymentTrigger` (``wait_timeout``), then to
    :class:`~mlops_provider.triggers.serving.EndpointReadyTrigger` (``/readyz`` and the live version,
    ``ready_timeout``); ``execute_complete`` returns the same result as the blocking path or raises
    ``DeploymentError`` / ``LiveVersionMismatch``. The local target always waits in the task: its
    blue/green servers are processes of the task until the switch.
    """

    template_fields: Sequence[str] = ("bento_tag", "state_dir", "host", "target")
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
        target: str = "local",
        drain_seconds: float = 2.0,
        verify_version: bool = True,
        front_port: int | None = None,
        kubernetes: dict[str, Any] | None = None,
        bentocloud: dict[str, Any] | None = None,
        bentoml_conn_id: str = "bentoml_default",
        deferrable: bool | None = None,
        poll_interval: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.deferrable = default_deferrable(deferrable)
        self.poll_interval = poll_interval
        self.bento_tag = bento_tag
        self.host = host
        self.port = port
        self.state_dir = state_dir
        self.ready_timeout = ready_timeout
        self.smoke_request = smoke_request
        self.target = target
        self.drain_seconds = drain_seconds
        self.verify_version = verify_version
        self.front_port = front_port
        self.kubernetes = dict(kubernetes or {})
        self.bentocloud = dict(bentocloud or {})
        self.bentoml_conn_id = bentoml_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.bentoml import BentoMLHook
        from mlops_provider.runtime.serving.deploy import deploy_bento

        hook = BentoMLHook(self.bentoml_conn_id)
        k8s_client = cloud = None
        if self.target == "kubernetes":
            k8s_client = kubernetes_api_client(self.kubernetes.get("conn_id", "kubernetes_default"))
        elif self.target == "bentocloud":
            from mlops_provider.hooks.bentocloud import BentoCloudHook

            cloud = BentoCloudHook(str(self.bentocloud.get("conn_id") or "bentocloud_default")).settings()
        defer = self.deferrable and self.target != "local"
        if self.deferrable and not defer:
            self.log.info("deferrable: the local target waits in the task (its servers are the task's processes)")
        result = deploy_bento(
            self.bento_tag,
            target=self.target,
            state_dir=self.state_dir,
            bentoml_home_dir=hook.bentoml_home,
            host=self.host,
            port=int(self.port),
            ready_timeout=float(self.ready_timeout),
            smoke_request=self.smoke_request,
            drain_seconds=float(self.drain_seconds),
            front_port=int(self.front_port) if self.front_port else None,
            kubernetes=self.kubernetes,
            kubernetes_api_client=k8s_client,
            bentocloud=self.bentocloud,
            bentocloud_api_key=cloud.api_key if cloud else None,
            bentocloud_endpoint=cloud.endpoint if cloud else None,
            verify_version=bool(self.verify_version),
            headers=hook.headers() if self.target != "local" else {},
            on_endpoint=lambda u: BentoEndpointLink.persist(context, u),
            wait=not defer,
        )
        if defer:
            self._defer_next(result, after="deploy")
        return self._done(context, result)

    # --- deferrable path: apply -> [rollout | bentocloud] -> ready -> done ---------------------------------
    def _deadline(self, seconds: float) -> tuple[str, timedelta]:
        """The trigger's own deadline (ISO) and the deferral's safety-net timeout behind it."""
        end = datetime.now(UTC) + timedelta(seconds=float(seconds))
        return end.isoformat(), timedelta(seconds=float(seconds) + max(60.0, 3 * float(self.poll_interval)))

    def _defer_next(self, result: dict[str, Any], *, after: str) -> None:
        """Defer to the next wait after stage ``after``; returns when nothing is left to wait for."""
        from mlops_provider.triggers import serving as t

        poll = {"poll_interval": float(self.poll_interval)}
        trigger: Any = None
        seconds = 0.0
        if after == "deploy" and self.target == "kubernetes" and result.get("mode") == "applied" \
                and self.kubernetes.get("wait", True):
            seconds = float(self.kubernetes.get("rollout_timeout") or 600.0)
            deadline, _ = self._deadline(seconds)
            trigger = t.KubernetesRolloutTrigger(
                name=str(result["name"]), namespace=str(result["namespace"]),
                conn_id=str(self.kubernetes.get("conn_id") or "kubernetes_default"), timeout=seconds,
                deadline=deadline, **poll)
        elif after == "deploy" and self.target == "bentocloud" and int(self.bentocloud.get("wait_timeout", 900)) > 0:
            seconds = float(self.bentocloud.get("wait_timeout", 900))
            deadline, _ = self._deadline(seconds)
            trigger = t.BentoCloudDeploymentTrigger(
                name=str(result["name"]), cluster=result.get("cluster"),
                conn_id=str(self.bentocloud.get("conn_id") or "bentocloud_default"), timeout=seconds,
                deadline=deadline, **poll)
        elif after != "ready" and result.get("url") and self.verify_version:
            seconds = float(self.ready_timeout)
            deadline, _ = self._deadline(seconds)
            trigger = t.EndpointReadyTrigger(
                url=str(result["url"]), bento_tag=self.bento_tag, bentoml_conn_id=self.bentoml_conn_id,
                timeout=seconds, deadline=deadline, **poll)
        elif after == "deploy" and not result.get("url"):
            self.log.info("No endpoint URL for target %s: live version not verified", self.target)
        if trigger is None:
            return
        _, safety = self._deadline(seconds)
        self.log.info("Deferring: %s (up to %.0f s)", trigger.describe(), seconds)
        self.defer(trigger=trigger, method_name="execute_complete", kwargs={"result": result}, timeout=safety)

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, result: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resume after a trigger: raise its error by name, or defer to the next wait, or finish."""
        from mlops_provider.exceptions import DeploymentError, LiveVersionMismatch

        event = event or {}
        result = dict(result or {})
        stage = str(event.get("stage") or "?")
        if event.get("status") != "success":
            what = f"{self.bento_tag} to {self.target}: the {stage} wait in the triggerer failed"
            message = f"{what}: {event.get('error_type', 'error')}: {event.get('message', event)}"
            if event.get("error_type") == "LiveVersionMismatch":
                raise LiveVersionMismatch(message, live=event.get("live"))
            raise DeploymentError(message)
        if stage == "rollout":
            result["rollout"] = event.get("rollout")
        elif stage == "bentocloud":
            url = (event.get("deployment") or {}).get("url")
            if url and not result.get("url"):
                result["url"] = url
                BentoEndpointLink.persist(context, url)
        elif stage == "ready":
            result["live"] = event.get("live")
            self.log.info("Live version at %s: %s", result.get("url"), result["live"])
        self._defer_next(result, after=stage)
        return self._done(context, result)

    def _done(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        url = result.get("front_url") or result.get("url")  # the stable front when there is one
        self.log.info(
            "%s deployed to %s%s%s", self.bento_tag, self.target, f" at {url}" if url else "",
            f"; replaced {result['previous_bento_tag']}" if result.get("previous_bento_tag") else "",
        )
        _set_outlet_extras(self, context, {"bento_tag": self.bento_tag, "url": url, "target": self.target})
        return result


class BentoContainerizeOperator(BaseOperator):
    """``bentoml containerize`` the bento into an image (for the kubernetes target).

    Skips (with the reason in the log and the UI) when no Docker engine answers here; re-runs reuse an
    existing image. Returns ``{"image", "created", "engine"}``.
    """

    template_fields: Sequence[str] = ("bento_tag", "image_tag")
    ui_color = "#fddb3a"

    def __init__(
        self, *, bento_tag: str, image_tag: str | None = None, bentoml_conn_id: str = "bentoml_default", **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.bento_tag = bento_tag
        self.image_tag = image_tag
        self.bentoml_conn_id = bentoml_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.exceptions import ContainerEngineUnavailable
        from mlops_provider.hooks.bentoml import BentoMLHook
        from mlops_provider.operator_notes import skip
        from mlops_provider.runtime.serving.containerize import containerize

        try:
            result = containerize(
                self.bento_tag, image_tag=self.image_tag or None, bentoml_home_dir=BentoMLHook(self.bentoml_conn_id).bentoml_home
            )
        except ContainerEngineUnavailable as e:
            skip(str(e), log=self.log)
        self.log.info("Image %s %s", result["image"], "built" if result["created"] else "already exists")
        return result


class BatchPredictOperator(BaseOperator):
    """Offline scoring: a dataset window scored with the registered model version into parquet.

    ``source``: a snapshot directory, a parquet file or directory (local or ``s3://``); rows with
    ``timestamp_column`` in ``[window_start, window_end)`` are scored with ``models:/<model>@<alias>``
    (resolved once; or a pinned ``version``) and written to
    ``<output_root>/<model>/v<version>/<window>.parquet`` (local or ``s3://``). Idempotent per
    (window, model version): an existing output is kept and the task changes nothing. Returns
    ``{"output", "rows", "created", "model_version", "window", ...}``.
    """

    template_fields: Sequence[str] = (
        "model_name", "source", "output_root", "alias", "version", "window_start", "window_end",
    )
    ui_color = "#fddb3a"

    def __init__(
        self,
        *,
        model_name: str,
        source: str,
        output_root: str,
        features: dict[str, list[str]],
        alias: str = "champion",
        version: str | None = None,
        window_start: str | None = None,
        window_end: str | None = None,
        timestamp_column: str = "event_timestamp",
        chunk_rows: int = 50_000,
        mlflow_conn_id: str = "mlflow_default",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model_name = model_name
        self.source = source
        self.output_root = output_root
        self.features = features
        self.alias = alias
        self.version = version
        self.window_start = window_start
        self.window_end = window_end
        self.timestamp_column = timestamp_column
        self.chunk_rows = chunk_rows
        self.mlflow_conn_id = mlflow_conn_id
        self.aws_conn_id = aws_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.mlflow import MLflowHook
        from mlops_provider.operators import object_store
        from mlops_provider.runtime.serving.batch import batch_predict

        tracking = MLflowHook(self.mlflow_conn_id).configure()
        result = batch_predict(
            self.model_name,
            self.source,
            self.output_root,
            self.features,
            alias=self.alias,
            version=self.version or None,
            window_start=self.window_start or None,
            window_end=self.window_end or None,
            timestamp_column=self.timestamp_column,
            chunk_rows=int(self.chunk_rows),
            mlflow_tracking_uri=tracking.tracking_uri,
            mlflow_registry_uri=tracking.registry_uri,
            store=object_store(self.aws_conn_id),
        )
        self.log.info(
            "%s rows of %s scored with %s v%s -> %s%s", result["rows"], self.source, self.model_name,
            result["model_version"], result["output"], "" if result["created"] else " (already there: nothing to do)",
        )
        _set_outlet_extras(self, context, {"output": result["output"], "model_version": result["model_version"]})
        return result


class BentoSmokeTestOperator(BaseOperator):
    """POST ``request`` to ``<url>/predict`` over HTTP (``X-Mlops-Traffic: smoke``); fail with
    ``DeploymentError`` on a bad answer.

    A bad answer is a non-2xx status or an invalid prediction for the task (binary: a probability in
    [0, 1] and a 0/1 prediction; multiclass: probabilities and a class; regression: a finite number).
    An empty ``request`` sends the smoke request bundled in ``expected_bento_tag``'s bento. With
    ``expected_bento_tag`` the endpoint's ``/health`` must also report that bento, else
    ``LiveVersionMismatch`` (a silent rollback since the deploy).
    Returns the first prediction (binary: ``{"request_id", "model_version", "probability", "prediction"}``).
    """

    template_fields: Sequence[str] = ("url", "request", "expected_bento_tag")
    template_fields_renderers = {"request": "json"}
    ui_color = "#fddb3a"

    def __init__(
        self,
        *,
        url: str,
        request: dict[str, Any],
        timeout: float = 30,
        expected_bento_tag: str | None = None,
        bentoml_conn_id: str = "bentoml_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.url = url
        self.request = request
        self.timeout = timeout
        self.expected_bento_tag = expected_bento_tag
        self.bentoml_conn_id = bentoml_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.hooks.bentoml import BentoMLHook
        from mlops_provider.runtime.serving.checks import check_endpoint

        hook = BentoMLHook(self.bentoml_conn_id)
        url = self.url or hook.url or ""
        request = self.request
        if not request and self.expected_bento_tag:
            from mlops_provider.runtime.serving.package import bento_config

            request = bento_config(self.expected_bento_tag, hook.bentoml_home).get("smoke_request") or {}
        if not request:
            from mlops_provider.exceptions import DeploymentError

            raise DeploymentError(
                "No smoke request: set serving.smoke_request, or package a model version with an evaluation "
                "snapshot (its rows become the default smoke request)."
            )
        checked = check_endpoint(
            url, request, timeout=float(self.timeout), headers=hook.headers(),
            expected_bento_tag=self.expected_bento_tag or None,
        )
        response: dict[str, Any] = checked["prediction"]
        self.log.info("Smoke test of %s: %s", url, response)
        if checked["live"] is not None:
            self.log.info("Live version at %s: %s", url, checked["live"])
        _set_outlet_extras(self, context, {"url": url, "model_version": response.get("model_version")})
        return response
