"""Alerts on drift, performance drop and circuit-breaker trips, as Airflow notifiers.

Each notifier is an ``airflow.sdk.BaseNotifier``: attach it to a task callback
(``on_success_callback=[...]``) or to a HITL task (``notifiers=[...]``, called when the human is
asked). The factory builds them from ``monitoring.alerts`` in the model YAML
(:func:`build_notifiers`). Every notifier sends the same payload::

    {"event": "drift" | "performance" | "circuit_breaker", "model": str, "subject": str,
     "text": str, "dag_id", "run_id", "task_id", "details": <the XCom of details_task_id or {}>}

* :class:`LogAlertNotifier`     - one WARNING line in the task log;
* :class:`EmailAlertNotifier`   - a plain-text mail over SMTP (an Airflow SMTP connection, or a host/port);
* :class:`WebhookAlertNotifier` - a JSON POST whose ``text`` key is what Slack incoming webhooks show.

Alerts never break the pipeline: a delivery failure is logged (``raise_on_error=True`` turns it
into :class:`~mlops_provider.exceptions.AlertDeliveryError`). Secrets (SMTP password, webhook
URL from a connection) are never logged.

Light module: standard library and ``airflow.sdk`` only.
"""

from __future__ import annotations

import json
import logging
import smtplib
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from email.message import EmailMessage
from typing import Any

from airflow.sdk import BaseNotifier

from mlops_provider.exceptions import AlertDeliveryError

log = logging.getLogger(__name__)

ALERT_EVENTS = ("drift", "performance", "circuit_breaker")


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class MlopsAlertNotifier(BaseNotifier):
    """Common part: the payload. Subclasses implement :meth:`deliver`."""

    template_fields: Sequence[str] = ("subject", "message")

    def __init__(
        self,
        *,
        event: str,
        model: str = "",
        subject: str = "",
        message: str = "",
        details_task_id: str | None = None,
        only_if: str | None = None,
        only_if_missing: bool = True,
        raise_on_error: bool = False,
    ) -> None:
        super().__init__()
        if event not in ALERT_EVENTS:
            raise ValueError(f"unknown alert event {event!r}; expected one of {ALERT_EVENTS}")
        self.event = event
        self.model = model
        self.subject = subject or f"[mlops] {event.replace('_', ' ')} on {model}"
        self.message = message
        self.details_task_id = details_task_id
        self.only_if = only_if
        self.only_if_missing = only_if_missing
        self.raise_on_error = raise_on_error
        self.last_payload: dict[str, Any] | None = None

    def payload(self, context: Mapping[str, Any]) -> dict[str, Any]:
        ti = context.get("ti") or context.get("task_instance")
        details: Any = {}
        if self.details_task_id and ti is not None:
            try:
                details = ti.xcom_pull(task_ids=self.details_task_id) or {}
            except Exception as e:  # noqa: BLE001 - details are best effort
                details = {"error": f"could not read XCom of {self.details_task_id}: {e}"}
        text = f"{self.subject}\n{self.message}".strip()
        return _jsonable(
            {
                "event": self.event,
                "model": self.model,
                "subject": str(self.subject),
                "text": text,
                "dag_id": getattr(ti, "dag_id", None),
                "run_id": getattr(ti, "run_id", None),
                "task_id": getattr(ti, "task_id", None),
                "details": details,
            }
        )

    def deliver(self, payload: dict[str, Any]) -> None:
        raise NotImplementedError

    def wanted(self, details: Any) -> bool:
        """``only_if`` (a dotted key of the details, e.g. ``performance.degraded``) must be truthy;
        a missing key counts as ``only_if_missing``."""
        if not self.only_if:
            return True
        value: Any = details
        for part in self.only_if.split("."):
            if not isinstance(value, Mapping) or part not in value:
                return self.only_if_missing
            value = value[part]
        return bool(value)

    def notify(self, context: Any) -> None:
        payload = self.payload(context)
        if not self.wanted(payload["details"]):
            self.log.info(
                "No %s alert: %s is not set in the details of %s",
                self.event,
                self.only_if,
                self.details_task_id,
            )
            return
        self.last_payload = payload
        try:
            self.deliver(payload)
        except Exception as e:
            msg = f"{type(self).__name__}: {self.event} alert of {self.model} not delivered: {type(e).__name__}: {e}"
            if self.raise_on_error:
                raise AlertDeliveryError(msg + ". Check the alert channel in monitoring.alerts.") from e
            self.log.error("%s", msg)


class LogAlertNotifier(MlopsAlertNotifier):
    """The alert as one WARNING line of the task log (always available, no configuration)."""

    def deliver(self, payload: dict[str, Any]) -> None:
        self.log.warning(
            "ALERT %s %s: %s | %s",
            payload["event"],
            payload["model"],
            payload["text"],
            json.dumps(payload["details"], default=str)[:2000],
        )


class EmailAlertNotifier(MlopsAlertNotifier):
    """A plain-text mail (JSON details attached inline) over SMTP.

    Server and credentials: the Airflow connection ``smtp_conn_id`` (host, port, login, password;
    extra ``{"starttls": true}``), or ``smtp_host`` / ``smtp_port`` without authentication.
    """

    template_fields: Sequence[str] = ("subject", "message", "to")

    def __init__(
        self,
        *,
        to: Sequence[str],
        sender: str = "airflow-mlops@localhost",
        smtp_conn_id: str | None = None,
        smtp_host: str | None = None,
        smtp_port: int = 25,
        starttls: bool = False,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.to = list(to)
        self.sender = sender
        self.smtp_conn_id = smtp_conn_id
        self.smtp_host = smtp_host
        self.smtp_port = smtp_port
        self.starttls = starttls
        self.timeout = timeout

    def _server(self) -> tuple[str, int, str | None, str | None, bool]:
        if self.smtp_conn_id:
            from airflow.sdk import BaseHook

            conn = BaseHook.get_connection(self.smtp_conn_id)
            extra = conn.extra_dejson or {}
            return (
                conn.host or "localhost",
                int(conn.port or 25),
                conn.login or None,
                conn.password or None,
                bool(extra.get("starttls", self.starttls)),
            )
        return self.smtp_host or "localhost", int(self.smtp_port), None, None, self.starttls

    def deliver(self, payload: dict[str, Any]) -> None:
        host, port, login, password, starttls = self._server()
        msg = EmailMessage()
        msg["Subject"] = payload["subject"]
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        body = [
            payload["text"],
            "",
            f"DAG {payload['dag_id']} run {payload['run_id']} task {payload['task_id']}",
        ]
        if payload["details"]:
            body += ["", "Details:", json.dumps(payload["details"], indent=2, default=str)]
        msg.set_content("\n".join(body))
        with smtplib.SMTP(host, port, timeout=self.timeout) as smtp:
            if starttls:
                smtp.starttls()
            if login:
                smtp.login(login, password or "")
            smtp.send_message(msg)
        self.log.info(
            "Sent %s alert of %s to %s via %s:%s", payload["event"], payload["model"], self.to, host, port
        )


class WebhookAlertNotifier(MlopsAlertNotifier):
    """A JSON POST of the payload (Slack incoming webhooks display its ``text``).

    URL: ``url`` (templated), or the Airflow connection ``http_conn_id``: its ``host`` when it is a
    full URL (``https://hooks.slack.com/...``), else ``schema://host:port`` + its ``password`` as the
    path (how Slack webhook connections keep the token out of the host).
    """

    template_fields: Sequence[str] = ("subject", "message", "url")

    def __init__(
        self, *, url: str | None = None, http_conn_id: str | None = None, timeout: float = 10.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        if not url and not http_conn_id:
            raise ValueError("WebhookAlertNotifier needs url or http_conn_id")
        self.url = url
        self.http_conn_id = http_conn_id
        self.timeout = timeout

    def _url(self) -> str:
        if self.url:
            return str(self.url)
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(str(self.http_conn_id))
        host = conn.host or ""
        if host.startswith(("http://", "https://")):
            return host + (conn.password or "")
        scheme = conn.schema or "https"
        port = f":{conn.port}" if conn.port else ""
        path = conn.password or ""
        return f"{scheme}://{host}{port}{'' if path.startswith('/') or not path else '/'}{path}"

    def deliver(self, payload: dict[str, Any]) -> None:
        url = self._url()
        data = json.dumps(payload).encode("utf-8")
        req = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "airflow-mlops"},
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310 - configured URL
                status = resp.status
        except urllib.error.HTTPError as e:
            raise AlertDeliveryError(f"webhook answered HTTP {e.code}") from None
        except urllib.error.URLError as e:
            # never echo the URL: it may carry a token
            raise AlertDeliveryError(f"webhook unreachable ({e.reason})") from None
        self.log.info(
            "Posted %s alert of %s to the webhook (HTTP %s)", payload["event"], payload["model"], status
        )


_KINDS: dict[str, type[MlopsAlertNotifier]] = {
    "log": LogAlertNotifier,
    "email": EmailAlertNotifier,
    "webhook": WebhookAlertNotifier,
}


def build_notifiers(
    targets: Sequence[Any],
    event: str,
    *,
    model: str,
    subject: str = "",
    message: str = "",
    details_task_id: str | None = None,
    only_if: str | None = None,
    only_if_missing: bool = True,
) -> list[MlopsAlertNotifier]:
    """Notifiers of every ``monitoring.alerts`` target subscribed to ``event`` (config objects or dicts)."""
    out: list[MlopsAlertNotifier] = []
    for t in targets:
        spec = t.model_dump() if hasattr(t, "model_dump") else dict(t)
        if event not in (spec.get("events") or ALERT_EVENTS):
            continue
        kind = spec.get("type")
        common: dict[str, Any] = {
            "event": event,
            "model": model,
            "subject": subject,
            "message": message,
            "details_task_id": details_task_id,
            "only_if": only_if,
            "only_if_missing": only_if_missing,
        }
        if kind == "email":
            out.append(
                EmailAlertNotifier(
                    to=spec.get("to") or [],
                    sender=spec.get("sender") or "airflow-mlops@localhost",
                    smtp_conn_id=spec.get("smtp_conn_id"),
                    smtp_host=spec.get("smtp_host"),
                    smtp_port=int(spec.get("smtp_port") or 25),
                    starttls=bool(spec.get("starttls")),
                    timeout=float(spec.get("timeout") or 10.0),
                    **common,
                )
            )
        elif kind == "webhook":
            out.append(
                WebhookAlertNotifier(
                    url=spec.get("url"),
                    http_conn_id=spec.get("http_conn_id"),
                    timeout=float(spec.get("timeout") or 10.0),
                    **common,
                )
            )
        elif kind == "log":
            out.append(LogAlertNotifier(**common))
        else:
            raise ValueError(f"unknown alert type {kind!r}; expected one of {sorted(_KINDS)}")
    return out


__all__ = [
    "ALERT_EVENTS",
    "EmailAlertNotifier",
    "LogAlertNotifier",
    "MlopsAlertNotifier",
    "WebhookAlertNotifier",
    "build_notifiers",
]
