"""Operators of the provider (light modules: heavy libraries are imported inside ``execute``)."""

from __future__ import annotations


def default_deferrable(value: bool | None = None) -> bool:
    """``value`` when given, else Airflow's ``[operators] default_deferrable`` (False when unset).

    Resolved when the operator is built (not when this module is imported), so the setting of the
    process that parses the DAG applies, as for the amazon provider's ``deferrable`` arguments.
    """
    if value is not None:
        return bool(value)
    from airflow.sdk.configuration import conf

    return conf.getboolean("operators", "default_deferrable", fallback=False)
