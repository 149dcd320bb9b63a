"""Compatibility name: ``feature_store.yaml`` files written before 0.2 name the offline store
``mlops_provider.runtime.feast_offline.PointInTimeFileOfflineStore``. It keeps working; new repos use
``mlops_provider.runtime.features.offline_store.PointInTimeFileOfflineStore`` (same classes)."""

from mlops_provider.runtime.features.offline_store import (  # noqa: F401 - re-exported for Feast's class lookup
    PointInTimeFileOfflineStore,
    PointInTimeFileOfflineStoreConfig,
    point_in_time_join,
)
