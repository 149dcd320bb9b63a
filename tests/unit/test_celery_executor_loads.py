"""The CeleryExecutor of the installed environment loads (the `celery` extra's pins are compatible).

celery 5.7 removed ``celery.backends.database.retry``, which apache-airflow-providers-celery 3.26 imports at
module level: the scheduler then refuses the executor (":CeleryExecutor: could not be loaded") and every
worker dies at start. The distributed system test would find it in minutes; this finds it in a second.
"""

from __future__ import annotations

import pytest


def test_celery_executor_module_imports() -> None:
    pytest.importorskip("airflow.providers.celery", reason="the `celery` extra is not installed")
    from airflow.providers.celery.executors import celery_executor, celery_executor_utils

    assert celery_executor.CeleryExecutor.__name__ == "CeleryExecutor"
    assert callable(celery_executor_utils.execute_workload)
