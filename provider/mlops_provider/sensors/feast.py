"""``FeatureFreshnessSensor``: wait until a feature service's views are materialized up to a time.

Parse-safe: only the standard library, ``airflow.sdk`` and light provider modules at module level; Feast
is imported inside ``poke()`` (worker) or in the trigger's worker thread (triggerer).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context, PokeReturnValue
from airflow.sdk.exceptions import AirflowSensorTimeout

from mlops_provider.exceptions import FeatureStoreError
from mlops_provider.hooks.feast import FeastHook


class FeatureFreshnessTimeout(FeatureStoreError, AirflowSensorTimeout):
    """Feature views were still stale when the sensor's ``timeout`` ran out (names them, with the lag).

    A :class:`FeatureStoreError` and an ``AirflowSensorTimeout`` (so the task fails without retries, and
    ``soft_fail`` turns it into a skip, as for any sensor timeout).
    """

    def __init__(self, message: str, report: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.report = report or {}


def _stale_message(report: dict[str, Any], feature_service: str | None, why: str) -> str:
    from mlops_provider.runtime.features.freshness import describe_staleness

    what = f"feature service {feature_service!r}" if feature_service else "the feature views"
    return (
        f"{why}: {what} is not materialized up to {report.get('target')}; stale view(s): "
        f"{describe_staleness(report)}. Run (or fix) the materialize task of the features DAG for that window, "
        "or lower target_time."
    )


class FeatureFreshnessSensor(BaseSensorOperator):
    """Succeed once every materialized feature view of ``feature_service`` reaches ``target_time``.

    Reads each view's materialization intervals from the Feast registry (``most_recent_end_time``, which
    ``FeastMaterializeOperator`` and ``FeatureStore.materialize`` record). On-demand views are skipped.
    Returns (XCom) the freshness report: ``{"target", "fresh", "stale", "views": {name: {...}}}``.

    :param repo_path: Feast repo directory. Templated.
    :param feature_service: service whose views are checked. Templated.
    :param target_time: ISO timestamp; default the run's ``data_interval_end``. Templated.
    :param feature_views: check these views instead of the service's. Templated.
    :param deferrable: wait in the triggerer (:class:`~mlops_provider.triggers.feast.FeatureFreshnessTrigger`)
        instead of a worker slot; default: Airflow's ``[operators] default_deferrable``.
    :param poke_interval: seconds between registry reads (both modes).
    :param timeout: seconds before failing with :class:`FeatureFreshnessTimeout` naming the stale views.
    """

    template_fields: Sequence[str] = ("repo_path", "feature_service", "target_time", "feature_views")
    ui_color = "#d5f5e3"

    def __init__(
        self,
        *,
        repo_path: str,
        feature_service: str | None = None,
        target_time: str | datetime | None = None,
        feature_views: list[str] | None = None,
        feast_conn_id: str = FeastHook.default_conn_name,
        deferrable: bool | None = None,
        **kwargs: Any,
    ) -> None:
        from mlops_provider.operators import default_deferrable

        super().__init__(**kwargs)
        self.repo_path = repo_path
        self.feature_service = feature_service
        self.target_time = target_time
        self.feature_views = feature_views
        self.feast_conn_id = feast_conn_id
        self.deferrable = default_deferrable(deferrable)
        self._last_report: dict[str, Any] | None = None

    # --- helpers ----------------------------------------------------------------------------------------
    def _target(self, context: Context) -> str:
        value: Any = self.target_time
        if value is None or str(value).strip() in ("", "None"):
            value = context.get("data_interval_end")  # type: ignore[misc]
        if value is None:
            raise FeatureStoreError(
                "no target_time: pass target_time, or run the sensor in a DAG run that has a data interval"
            )
        if isinstance(value, datetime):
            value = (value.replace(tzinfo=UTC) if value.tzinfo is None else value).isoformat()
        return str(value)

    def _views(self) -> list[str] | None:
        from mlops_provider.operators.feast import as_name_list

        return as_name_list(self.feature_views) or None

    def _check(self, target: str) -> dict[str, Any]:
        from mlops_provider.runtime.features.freshness import feature_freshness
        from mlops_provider.runtime.features.store import open_store

        hook = FeastHook(feast_conn_id=self.feast_conn_id, repo_path=self.repo_path)
        if not (self.feature_service or self._views()):
            raise FeatureStoreError("FeatureFreshnessSensor needs feature_service or feature_views")
        return feature_freshness(
            open_store(**hook.store_settings(self.repo_path)), target, feature_service=self.feature_service,
            feature_views=self._views(),
        )

    # --- poke mode --------------------------------------------------------------------------------------
    def poke(self, context: Context) -> PokeReturnValue:
        report = self._check(self._target(context))
        self._last_report = report
        if not report["fresh"]:
            from mlops_provider.runtime.features.freshness import describe_staleness

            self.log.info("not fresh yet (target %s): %s", report["target"], describe_staleness(report))
        return PokeReturnValue(is_done=bool(report["fresh"]), xcom_value=report)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            try:
                return super().execute(context)
            except FeatureFreshnessTimeout:
                raise
            except AirflowSensorTimeout as e:
                report = self._last_report or {}
                raise FeatureFreshnessTimeout(
                    _stale_message(report, self.feature_service, f"timed out after {self.timeout:g} s"), report
                ) from e
        target = self._target(context)
        report = self._check(target)  # fresh already: no deferral
        if report["fresh"]:
            self.log.info("feature views fresh up to %s: %s", target, sorted(report["views"]))
            return report
        from mlops_provider.triggers.feast import FeatureFreshnessTrigger

        deadline = datetime.now(UTC) + timedelta(seconds=float(self.timeout))
        self.defer(
            trigger=FeatureFreshnessTrigger(
                repo_path=self.repo_path,
                target_time=target,
                feature_service=self.feature_service,
                feature_views=self._views(),
                feast_conn_id=self.feast_conn_id,
                poll_interval=float(self.poke_interval),
                deadline=deadline.isoformat(),
            ),
            method_name="execute_complete",
            # safety net only: the trigger itself yields a "timeout" event (with the stale views) at the deadline
            timeout=timedelta(seconds=float(self.timeout) + max(60.0, 2 * float(self.poke_interval))),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = event or {}
        status = event.get("status")
        if status == "success":
            report = event["report"]
            self.log.info("feature views fresh up to %s: %s", report["target"], sorted(report["views"]))
            return report
        if status == "timeout":
            report = event.get("report") or {}
            raise FeatureFreshnessTimeout(
                _stale_message(report, self.feature_service, f"timed out after {self.timeout:g} s"), report
            )
        raise FeatureStoreError(
            f"feature freshness check of {self.feature_service or self.feature_views!r} in {self.repo_path} failed "
            f"in the triggerer: {event.get('error_type', 'error')}: {event.get('message', event)}"
        )
