"""Entry points of the training DAG's retrain guards (runtime module).

:func:`run_training_policy` is everything :class:`mlops_provider.operators.control.TrainingPolicyOperator`
does once it has read the run's context: it reads the registry (through a :class:`RegistryView`), counts
new labels, decides (:func:`~mlops_provider.runtime.monitoring.retrain_guard.decide`) and records the
decision in the durable ledger. :func:`record_approval` stores a human's answer
(:class:`~mlops_provider.operators.control.RetrainApprovalOperator`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from mlops_provider.exceptions import ModelRegistryError
from mlops_provider.runtime.io.objstore import ObjectStore
from mlops_provider.runtime.monitoring import retrain_guard as rg

log = logging.getLogger(__name__)


class RegistryView:
    """What the guards read from the MLflow registry about one model.

    ``client``: a callable returning an ``MlflowClient``, called at the first read (a run whose decision
    is already recorded never contacts the registry). ``mlflow_conn_id`` only names the connection in
    error messages. ``store`` reads an ``s3://`` snapshot manifest.
    """

    def __init__(self, client: Callable[[], Any], model: str, *, mlflow_conn_id: str | None = None,
                 store: ObjectStore | None = None) -> None:
        self._client_factory = client
        self._client: Any = None
        self.model = model
        self.mlflow_conn_id = mlflow_conn_id
        self.store = store

    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def champion_version(self) -> str | None:
        """``@champion``'s version; None when the model or the alias does not exist yet (bootstrap).

        Any other registry error raises: an unreachable registry must not look like a bootstrap.
        """
        try:
            return str(self.client().get_model_version_by_alias(self.model, "champion").version)
        except Exception as e:
            code = str(getattr(e, "error_code", ""))
            if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
                return None
            conn = f" '{self.mlflow_conn_id}'" if self.mlflow_conn_id else ""
            raise ModelRegistryError(
                f"training policy: cannot read models:/{self.model}@champion ({type(e).__name__}: {e}). "
                f"Check the MLflow connection{conn} and that the registry is up, then clear this task."
            ) from e

    def gate_rejections(self, champion: str | None) -> tuple[int, list[str]]:
        """Rejected challengers in a row (``gate.decision`` tags); 0 when the registry cannot be read."""
        try:
            versions = self.client().search_model_versions(f"name='{self.model}'")
        except Exception as e:  # noqa: BLE001 - the breaker must not block on a registry hiccup
            log.warning("Could not read the gate verdicts of %s (%s); circuit breaker treated as closed.",
                        self.model, e)
            return 0, []
        return rg.consecutive_rejections(versions, champion)

    def champion_window_end(self, champion: str) -> str | None:
        """``window.end`` of the champion's training snapshot (lineage tag ``snapshot_path``)."""
        try:
            mv = self.client().get_model_version(self.model, champion)
            path = (mv.tags or {}).get("snapshot_path")
            if not path:
                return None
            from mlops_provider.runtime.features.snapshot import read_manifest

            window = read_manifest(path, store=self.store).get("window") or {}
            return window.get("end")
        except Exception as e:  # noqa: BLE001 - reported in the decision, never fatal
            log.warning("Could not read the training window of %s v%s: %s", self.model, champion, e)
            return None


def count_new_labels(
    labels_dir: str | os.PathLike[str], after: datetime | None, *, store: ObjectStore | None = None
) -> int:
    """Labelled rows under ``labels_dir`` (``*.parquet``, local or ``s3://``) with ``event_timestamp > after``.

    Reads only the timestamp column. A missing directory counts 0.
    """
    import pyarrow.compute as pc

    from mlops_provider.runtime.monitoring.performance import labels_files
    from mlops_provider.runtime.monitoring.window import open_parquet

    total = 0
    for f in labels_files(labels_dir, store):
        pf = open_parquet(f, store)
        if after is None:
            total += pf.metadata.num_rows
            continue
        col = pf.schema_arrow.get_field_index("event_timestamp")
        if col < 0:
            continue
        table = pf.read(columns=["event_timestamp"])
        ts = table.column("event_timestamp")
        if not str(ts.type).startswith("timestamp"):
            ts = pc.cast(ts, "timestamp[us, tz=UTC]")
        elif getattr(ts.type, "tz", None) is None:
            ts = pc.assume_timezone(ts, "UTC")
        total += int(pc.sum(pc.greater(ts, after)).as_py() or 0)
    return total


def run_training_policy(
    *,
    model: str,
    key: str,
    now: datetime,
    events: list[tuple[str, dict[str, Any]]],
    retrain_on: Iterable[str],
    guards: Mapping[str, Any],
    registry: Any,
    state_path: str | os.PathLike[str] | None = None,
    labels_dir: str | None = None,
    store: ObjectStore | None = None,
) -> rg.Decision:
    """Decide (once per ``key``) whether this training run trains; the decision is recorded in the ledger.

    ``events``: ``[(asset kind, event extra), ...]`` that triggered the run (empty: a manual run);
    ``guards``: ``monitoring.retrain_guards`` as a dict; ``registry``: a :class:`RegistryView` (or any
    object with its three methods). Without ``state_path`` the guards that need history (dedupe,
    cooldown, rate) see none. A ``skip`` decision is returned like the others: the caller skips.
    """
    retrain_on = list(retrain_on)
    kinds = sorted({k for k, _ in events})
    settings = rg.GuardSettings(**{k: v for k, v in guards.items() if k in rg.GuardSettings.__dataclass_fields__})

    def compute(data: dict[str, Any]) -> rg.Decision:
        previous = data.get("decisions", {}).get(key)
        if previous is not None:
            log.info("Decision of %s already recorded (retry): reusing it", key)
            return rg.Decision.from_dict(previous)
        champion = registry.champion_version()
        guarded = champion is not None and bool(events) and bool(set(kinds) & set(retrain_on))
        rejections = new_labels = window_end = None
        if guarded and settings.enabled:
            rejections = registry.gate_rejections(champion)
            if labels_dir and settings.min_new_labels > 0 and champion is not None:
                window_end = registry.champion_window_end(champion)
                if window_end is None:
                    log.warning("Champion's training window unknown: new-label guard not applied.")
                else:
                    new_labels = count_new_labels(labels_dir, rg.as_utc(window_end), store=store)
        decision = rg.decide(
            key=key, now=now, triggered=events, manual=not events, champion=champion, retrain_on=retrain_on,
            settings=settings, ledger=data, rejections=rejections, new_labels=new_labels,
            champion_window_end=window_end,
        )
        rg.record(data, decision)
        sig = decision.details.get("signals")
        if sig:
            log.info("Retrain decision %s (%s) on monitor signal %s (drift=%s, performance=%s; retrain_when=%s): %s",
                     decision.action, decision.guard, sig["fired"], sig["drift"], sig["performance"],
                     list(settings.retrain_when), sig["why"])
        return decision

    if state_path:
        return rg.GuardLedger(state_path, model, store=store).update(compute)
    return compute({"decisions": {}, "windows": []})


def record_approval(
    state_path: str | os.PathLike[str], model: str, key: str, approved: bool, *, by: Any = None,
    store: ObjectStore | None = None,
) -> dict[str, Any] | None:
    """Store a human's answer on the ``ask`` decision ``key`` (an approved ask counts as a retrain)."""
    return rg.GuardLedger(state_path, model, store=store).record_approval(key, approved, by=by)


__all__ = ["RegistryView", "count_new_labels", "record_approval", "run_training_policy"]
