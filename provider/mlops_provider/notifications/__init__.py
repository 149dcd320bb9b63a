"""Alert notifiers (Airflow ``BaseNotifier``): log, email (SMTP), webhook (Slack-compatible JSON)."""

from mlops_provider.notifications.alerts import (
    ALERT_EVENTS,
    EmailAlertNotifier,
    LogAlertNotifier,
    MlopsAlertNotifier,
    WebhookAlertNotifier,
    build_notifiers,
)

__all__ = [
    "ALERT_EVENTS",
    "EmailAlertNotifier",
    "LogAlertNotifier",
    "MlopsAlertNotifier",
    "WebhookAlertNotifier",
    "build_notifiers",
]
