"""Operators of the provider (light modules: heavy libraries are imported inside ``execute``)."""

from __future__ import annotations

from typing import Any


def default_deferrable(value: bool | None = None) -> bool:
    """``value`` when given, else Airflow's ``[operators] default_deferrable`` (False when unset).

    Resolved when the operator is built (not when this module is imported), so the setting of the
    process that parses the DAG applies, as for the amazon provider's ``deferrable`` arguments.
    """
    if value is not None:
        return bool(value)
    from airflow.sdk.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)


def object_store(aws_conn_id: str | None = "aws_default") -> Any:
    """The runtime's :class:`~mlops_provider.runtime.io.objstore.ObjectStore` of the ``aws_conn_id`` connection,
    resolved at its first ``s3://`` use (tasks on local paths never touch the connection). Call it inside
    ``execute()``: the runtime module is imported here."""
    from mlops_provider.hooks.objstore import ObjectStoreHook
    from mlops_provider.runtime.io.objstore import ObjectStore

    return ObjectStore(ObjectStoreHook(aws_conn_id).settings)
