"""Async trigger of :class:`~mlops_provider.sensors.feast.FeatureFreshnessSensor`.

Polls the Feast registry until every materialized feature view of a feature service (or the listed
views) is materialized up to ``target_time`` (``FeatureView.most_recent_end_time``), or ``deadline``
passes. The registry read (Feast, the connection lookup, SQL/file registry I/O) runs in a worker thread
(``asyncio.to_thread``) so the triggerer's event loop never blocks; Feast is imported only there.

Exactly one event is yielded:

* ``{"status": "success", "report": {...}}`` — every view fresh;
* ``{"status": "timeout", "report": {...}, "message": str}`` — the deadline passed; the report names the
  stale views and how far behind each is;
* ``{"status": "error", "error_type": str, "message": str}`` — any exception (bad repo, registry down,
  unknown feature service).

``report`` is :func:`mlops_provider.runtime.features.freshness.feature_freshness`'s dict.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent


class FeatureFreshnessTrigger(BaseTrigger):
    """Wait until the feature views of ``feature_service`` are materialized up to ``target_time``.

    :param repo_path: Feast repo directory.
    :param target_time: ISO timestamp the views must be materialized up to.
    :param feature_service: the service whose (non on-demand) views are checked.
    :param feature_views: check these views instead of the service's.
    :param feast_conn_id: Feast connection (optional; see :class:`~mlops_provider.hooks.feast.FeastHook`).
    :param poll_interval: seconds between registry reads.
    :param deadline: ISO timestamp after which a ``timeout`` event is yielded (None: wait forever).
    """

    def __init__(
        self,
        *,
        repo_path: str,
        target_time: str,
        feature_service: str | None = None,
        feature_views: list[str] | None = None,
        feast_conn_id: str = "feast_default",
        poll_interval: float = 60.0,
        deadline: str | None = None,
    ) -> None:
        super().__init__()
        self.repo_path = repo_path
        self.target_time = target_time
        self.feature_service = feature_service
        self.feature_views = list(feature_views) if feature_views else None
        self.feast_conn_id = feast_conn_id
        self.poll_interval = float(poll_interval)
        self.deadline = deadline
        self._store: Any = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "repo_path": self.repo_path,
                "target_time": self.target_time,
                "feature_service": self.feature_service,
                "feature_views": self.feature_views,
                "feast_conn_id": self.feast_conn_id,
                "poll_interval": self.poll_interval,
                "deadline": self.deadline,
            },
        )

    def check(self) -> dict[str, Any]:
        """One registry read (blocking; the trigger runs it in a thread). The store is opened once."""
        from mlops_provider.hooks.feast import FeastHook
        from mlops_provider.runtime.features.freshness import feature_freshness
        from mlops_provider.runtime.features.store import open_store

        if self._store is None:
            hook = FeastHook(feast_conn_id=self.feast_conn_id, repo_path=self.repo_path)
            self._store = open_store(**hook.store_settings(self.repo_path))
        return feature_freshness(
            self._store,
            self.target_time,
            feature_service=self.feature_service,
            feature_views=self.feature_views,
        )

    def _deadline(self) -> datetime | None:
        if not self.deadline:
            return None
        ts = datetime.fromisoformat(self.deadline.replace("Z", "+00:00"))
        return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts

    async def run(self) -> AsyncIterator[TriggerEvent]:
        try:
            deadline = self._deadline()
            while True:
                report = await asyncio.to_thread(self.check)
                if report["fresh"]:
                    yield TriggerEvent({"status": "success", "report": report})
                    return
                self.log.info("waiting for stale feature views %s (target %s)", report["stale"], self.target_time)
                now = datetime.now(UTC)
                if deadline is not None and now >= deadline:
                    yield TriggerEvent(
                        {"status": "timeout", "report": report,
                         "message": f"deadline {deadline.isoformat()} passed"}
                    )
                    return
                wait = self.poll_interval
                if deadline is not None:
                    wait = max(0.0, min(wait, (deadline - now).total_seconds()))
                await asyncio.sleep(wait)
        except Exception as e:  # one error event for every failure; the sensor raises a named error
            yield TriggerEvent({"status": "error", "error_type": type(e).__name__, "message": str(e)})
