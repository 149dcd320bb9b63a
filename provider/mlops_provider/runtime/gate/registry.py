"""Registry aliases: ``@champion`` / ``@previous`` moves of the gate and the manual DAGs (runtime module).

Aliases, never stages. :func:`promote` moves ``@champion`` -> ``@previous`` and the gate's challenger ->
``@champion`` after re-reading the registry, so a stale verdict or a concurrent promotion cannot win
twice. :func:`set_champion` is the manual path (force-promote, rollback) and records the reason on the
version. Every move reads the alias back: a concurrent move shows up as :class:`PromotionConflictError`.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import mlflow
from mlflow import MlflowClient

from mlops_provider.exceptions import ManualActionError, ModelRegistryError, PromotionConflictError
from mlops_provider.runtime.training.tracking import configure_tracking

log = logging.getLogger(__name__)

CHAMPION = "champion"
PREVIOUS = "previous"


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    """Version number behind ``model_name@alias``, or None when the alias (or the model) is not set."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException as e:
        if e.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE", "NOT_FOUND"):
            return None
        raise


def model_version(client: MlflowClient, model_name: str, version: str, what: str) -> Any:
    """The registry entry of ``model_name`` v``version``; a named error (``what`` says who asked) when absent."""
    try:
        return client.get_model_version(model_name, str(version))
    except Exception as e:
        raise ModelRegistryError(
            f"{what}: {model_name} v{version} is not in the registry at {mlflow.get_registry_uri()} ({e}). "
            "Check the version number (training task's XCom 'model_version' / the DAG run form)."
        ) from e


def _move(client: MlflowClient, model_name: str, current: str | None, target: str) -> None:
    """@champion -> @previous, target -> @champion, then read back (a concurrent move shows up here)."""
    if current is not None:
        client.set_registered_model_alias(model_name, PREVIOUS, current)
    client.set_registered_model_alias(model_name, CHAMPION, target)
    after = alias_version(client, model_name, CHAMPION)
    if after != target:
        raise PromotionConflictError(
            f"promote: {model_name}@champion is v{after} right after setting it to v{target}: a concurrent "
            "promotion won. Inspect the aliases in MLflow; promotions should run in the promote pool."
        )


def promote(
    model_name: str, verdict: dict[str, Any], tracking: dict[str, Any] | None = None, *, by: str | None = None
) -> dict[str, Any]:
    """Move @champion -> @previous and the verdict's challenger -> @champion.

    Re-reads the registry first: if @champion already is the challenger this is a no-op; if @champion
    moved since the gate ran (the verdict is stale) it raises :class:`PromotionConflictError`.
    Returns ``{"champion", "previous", "changed", "promoted_by"}``.
    """
    if verdict.get("decision") != "promote":
        raise ModelRegistryError(
            f"promote: verdict for {model_name} is {verdict.get('decision')!r}, not 'promote'."
        )
    client = configure_tracking(tracking)
    challenger = str(verdict["challenger"]["version"])
    mv = model_version(client, model_name, challenger, "promote")
    current = alias_version(client, model_name, CHAMPION)
    if current == challenger:
        log.info("%s@champion already is v%s; nothing to do", model_name, challenger)
        return {
            "champion": challenger,
            "previous": alias_version(client, model_name, PREVIOUS),
            "changed": False,
            "promoted_by": (mv.tags or {}).get("gate.promoted_by"),
        }
    expected = (verdict.get("champion") or {}).get("version")
    expected = None if expected is None else str(expected)
    if current != expected:
        raise PromotionConflictError(
            f"promote: {model_name}@champion is v{current} but the gate compared against v{expected}; another "
            "promotion happened meanwhile. Re-run the gate task so the challenger is judged against the new champion."
        )
    _move(client, model_name, current, challenger)
    now = datetime.now(UTC).isoformat()
    client.set_model_version_tag(model_name, challenger, "gate.promoted_at", now)
    if by:
        client.set_model_version_tag(model_name, challenger, "gate.promoted_by", by)
    if current is not None:
        client.set_model_version_tag(model_name, current, "gate.demoted_at", now)
    log.info("%s@champion: v%s -> v%s (@previous = v%s)", model_name, current, challenger, current)
    return {"champion": challenger, "previous": current, "changed": True, "promoted_by": by}


def set_champion(
    model_name: str,
    version: str | int | None,
    *,
    action: str,
    reason: str,
    actor: str | None = None,
    by: str | None = None,
    tracking: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manual path: ``force_promote`` (any version, gate or not) or ``rollback`` (default: @previous).

    The reason (required), actor and run are recorded as ``mlops.<action>.*`` tags on the version.
    Returns ``{"champion", "previous", "changed"}``; ``changed`` is False when it already serves.
    """
    if action not in ("force_promote", "rollback"):
        raise ManualActionError(f"{action!r} is not a manual action; use 'force_promote' or 'rollback'.")
    reason = (reason or "").strip()
    if len(reason) < 3:
        raise ManualActionError(
            f"{action} of {model_name}: a reason is required (got {reason!r}); fill in the 'reason' field of the "
            "trigger form. It is recorded on the model version."
        )
    client = configure_tracking(tracking)
    current = alias_version(client, model_name, CHAMPION)
    target = str(version).strip() if version not in (None, "") else ""
    if not target:
        if action != "rollback":
            raise ManualActionError(f"force_promote of {model_name}: give the version number to promote.")
        target = alias_version(client, model_name, PREVIOUS) or ""
        if not target:
            raise ManualActionError(
                f"rollback of {model_name}: no version given and no @previous alias to roll back to. Give the "
                "version number in the trigger form."
            )
    model_version(client, model_name, target, action)
    if current == target:
        log.info(
            "%s: %s@champion already is v%s; nothing to do (reason: %s)", action, model_name, target, reason
        )
        return {"champion": target, "previous": alias_version(client, model_name, PREVIOUS), "changed": False}
    _move(client, model_name, current, target)
    now = datetime.now(UTC).isoformat()
    tags = {
        f"mlops.{action}.reason": reason[:4000],
        f"mlops.{action}.at": now,
        f"mlops.{action}.from_version": current or "none",
    }
    if actor:
        tags[f"mlops.{action}.actor"] = actor
    if by:
        tags[f"mlops.{action}.by"] = by
    for k, v in tags.items():
        client.set_model_version_tag(model_name, target, k, v)
    if current is not None:
        client.set_model_version_tag(model_name, current, "gate.demoted_at", now)
    log.warning(
        "%s: %s@champion v%s -> v%s by %s; reason: %s",
        action,
        model_name,
        current,
        target,
        actor or "unknown",
        reason,
    )
    return {"champion": target, "previous": current, "changed": True}


__all__ = ["CHAMPION", "PREVIOUS", "alias_version", "model_version", "promote", "set_champion"]
