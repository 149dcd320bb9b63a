"""Alerts on drift, performance drop and circuit-breaker trips, as Airflow notifiers.

Each notifier is an ``airflow.sdk.BaseNotifier``: attach it to a task callback
(``on_success_callback=[...]``) or to a HITL task (``notifiers=[...]``, called when the human is
asked). The factory builds them from ``monitoring.alerts`` in the model YAML
(:func:`build_notifiers`). Every notifier sends the same payload::

    {"event": "drift" | "performance" | "circuit_breaker", "model": str, "subject": str,
     "text": str, "dag_id", "run_id", "task_id", "details": <the XCom of details_task_id or {}>}

* :class:`LogAlertNotifier`     - one WARNING line in the task log;
* :class:`EmailAlertNotifier`   - a mail through the smtp provider's ``SmtpNotifier`` / ``SmtpHook`` (an
  Airflow SMTP connection, or a host/port);
* :class:`WebhookAlertNotifier` - a JSON POST through the http provider's ``HttpNotifier`` / ``HttpHook``,
  whose ``text`` key is what Slack incoming webhooks show.

Alerts never break the pipeline: a delivery failure is logged (``raise_on_error=True`` turns it
into :class:`~mlops_provider.exceptions.AlertDeliveryError`). Secrets (SMTP password, webhook
URL from a connection) are never logged.

Light module: standard library and ``airflow.sdk`` at import; the smtp / http providers are imported
inside :meth:`~MlopsAlertNotifier.deliver` only (a DAG parse never loads them).
"""

from __future__ import annotations

import contextlib
import html
import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
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
    """A mail (the text, then the JSON details) sent by the smtp provider's ``SmtpNotifier`` / ``SmtpHook``.

    Server and credentials: the Airflow SMTP connection ``smtp_conn_id`` (the smtp provider's connection
    type: host, port, login, password; extras ``disable_ssl``, ``disable_tls``, ``from_email``, ``timeout``,
    ``retry_limit``), or ``smtp_host`` / ``smtp_port`` without authentication (plain SMTP, STARTTLS when
    ``starttls``; an in-memory connection, nothing is stored). The body is HTML (``<pre>`` of the text and
    the details), as ``SmtpNotifier`` sends it.
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

    def _inline_connection(self) -> Any:
        """The ``smtp_host`` / ``smtp_port`` settings as an in-memory smtp connection (None with a conn id)."""
        if self.smtp_conn_id:
            return None
        from airflow.sdk import Connection

        return Connection(
            conn_id="mlops_alert_smtp",
            conn_type="smtp",
            host=self.smtp_host or "localhost",
            port=int(self.smtp_port),
            extra=json.dumps(
                {
                    "disable_ssl": True,
                    "disable_tls": not self.starttls,
                    "timeout": max(1, math.ceil(self.timeout)),
                    "retry_limit": 0,
                }
            ),
        )

    def body_html(self, payload: dict[str, Any]) -> str:
        lines = [payload["text"], "", f"DAG {payload['dag_id']} run {payload['run_id']} task {payload['task_id']}"]
        if payload["details"]:
            lines += ["", "Details:", json.dumps(payload["details"], indent=2, default=str)]
        return "<pre>" + html.escape("\n".join(lines), quote=False) + "</pre>"

    def deliver(self, payload: dict[str, Any]) -> None:
        from airflow.providers.smtp.hooks.smtp import SmtpHook
        from airflow.providers.smtp.notifications.smtp import SmtpNotifier

        inline = self._inline_connection()

        class _Hook(SmtpHook):
            def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
                return inline if inline is not None else SmtpHook.get_connection(conn_id)

        conn_id = self.smtp_conn_id or "mlops_alert_smtp"
        notifier = SmtpNotifier(
            to=self.to,
            from_email=self.sender,
            subject=payload["subject"],
            html_content=self.body_html(payload),
            smtp_conn_id=conn_id,
        )
        notifier.__dict__["hook"] = _Hook(smtp_conn_id=conn_id)  # the cached_property, pre-filled
        # notify(), not __call__: the payload is already rendered (details may hold "{{")
        notifier.notify({})
        where = f"connection {self.smtp_conn_id}" if self.smtp_conn_id else f"{self.smtp_host}:{self.smtp_port}"
        self.log.info("Sent %s alert of %s to %s via %s", payload["event"], payload["model"], self.to, where)


class _Redact(logging.Filter):
    """Drops nothing; replaces every secret (webhook URL, its path, a connection password) by ``***``."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) > 3}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for s in self.secrets:
            text = text.replace(s, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            record.msg = self.redact(record.getMessage())
            record.args = None
        return True


#: the logger of the HttpHook / HttpNotifier of a webhook delivery, and the wire-level loggers that name URLs
_HTTP_LOGGER = "mlops_provider.notifications.alerts.http"
_WIRE_LOGGERS = ("urllib3.connectionpool",)


@contextlib.contextmanager
def _redacting(secrets: Sequence[str], *loggers: str) -> Iterator[None]:
    """Redact ``secrets`` from every record of ``loggers`` while delivering (filters removed afterwards)."""
    flt = _Redact(secrets)
    targets = [logging.getLogger(name) for name in loggers]
    for lg in targets:
        lg.addFilter(flt)
    try:
        yield
    finally:
        for lg in targets:
            lg.removeFilter(flt)


class WebhookAlertNotifier(MlopsAlertNotifier):
    """A JSON POST of the payload (Slack incoming webhooks display its ``text``), sent by the http
    provider's ``HttpNotifier`` / ``HttpHook``.

    URL: ``url`` (templated), or the Airflow connection ``http_conn_id``: its ``host`` when it is a
    full URL (``https://hooks.slack.com/...``), else ``schema://host:port``, + its ``password`` as the
    path (how Slack webhook connections keep the token out of the host). The URL, its path and the
    password never reach a log line or an error message.
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

    def _target(self) -> tuple[Any, str, list[str]]:
        """(connection for HttpHook, endpoint, secrets to redact)."""
        from urllib.parse import urlsplit

        from airflow.sdk import BaseHook, Connection

        if self.url:
            parts = urlsplit(str(self.url))
            base = f"{parts.scheme}://{parts.netloc}"
            endpoint = parts.path + (f"?{parts.query}" if parts.query else "")
            conn = Connection(conn_id="mlops_alert_webhook", conn_type="http", host=base)
            return conn, endpoint, [str(self.url), endpoint, parts.query]
        stored = BaseHook.get_connection(str(self.http_conn_id))
        path = stored.password or ""
        if path and not path.startswith("/") and not (stored.host or "").endswith("/"):
            path = "/" + path
        # the password is the URL's path, not a basic-auth secret: hand HttpHook a copy without it
        conn = Connection(
            conn_id=stored.conn_id, conn_type="http", host=stored.host, schema=stored.schema or "https",
            port=stored.port, login=stored.login, extra=stored.extra,
        )
        return conn, path, [path, stored.password or ""]

    def deliver(self, payload: dict[str, Any]) -> None:
        from airflow.providers.http.hooks.http import HttpHook
        from airflow.providers.http.notifications.http import HttpNotifier
        from requests.exceptions import RequestException

        conn, endpoint, secrets = self._target()
        hook_log = logging.getLogger(_HTTP_LOGGER)
        status: dict[str, int] = {}

        class _Hook(HttpHook):
            def get_connection(self, conn_id: str) -> Any:  # type: ignore[override]
                return conn

            def run_and_check(self, session: Any, prepped_request: Any, extra_options: dict[Any, Any]) -> Any:
                try:
                    response = session.send(
                        prepped_request,
                        timeout=extra_options.get("timeout"),
                        allow_redirects=extra_options.get("allow_redirects", True),
                    )
                except RequestException as e:  # its text names the URL (and so the token): never echo it
                    raise AlertDeliveryError(f"webhook unreachable ({type(e).__name__})") from None
                status["code"] = response.status_code
                if response.status_code >= 400:
                    raise AlertDeliveryError(f"webhook answered HTTP {response.status_code}")
                return response

        hook = _Hook(method="POST", http_conn_id=conn.conn_id)
        hook._log = hook_log  # type: ignore[assignment]  # a stdlib logger carries the redacting filter
        notifier = HttpNotifier(
            http_conn_id=conn.conn_id,
            endpoint=endpoint,
            json=payload,
            headers={"Content-Type": "application/json", "User-Agent": "airflow-mlops"},
            extra_options={"timeout": self.timeout},
        )
        notifier.__dict__["hook"] = hook  # the cached_property, pre-filled
        notifier._log = hook_log  # type: ignore[assignment]
        with _redacting(secrets, _HTTP_LOGGER, *_WIRE_LOGGERS):
            notifier.notify({})
        self.log.info(
            "Posted %s alert of %s to the webhook (HTTP %s)", payload["event"], payload["model"], status.get("code")
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
