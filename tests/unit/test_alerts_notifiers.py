"""Alert notifiers against a real SMTP sink (aiosmtpd) and a webhook receiver, both on loopback."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlops_provider.config import AlertTarget, load_config
from mlops_provider.exceptions import AlertDeliveryError
from mlops_provider.notifications.alerts import (
    EmailAlertNotifier,
    LogAlertNotifier,
    WebhookAlertNotifier,
    build_notifiers,
)

REPO = Path(__file__).resolve().parents[2]
DRIFT = {"share": 0.5, "drifted_columns": ["temp", "month"], "model_version": "3"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _TI:
    dag_id, run_id, task_id = "flights_delay__monitor", "manual__1", "signal_drift"

    def xcom_pull(self, task_ids: str) -> Any:
        return DRIFT if task_ids == "signal_drift" else None


def _context() -> dict[str, Any]:
    return {"ti": _TI()}


def _body(msg: Any) -> str:
    """The text parts of a (multipart) mail, decoded (SmtpNotifier sends base64 HTML)."""
    import html

    parts = [p for p in msg.walk() if p.get_content_maintype() == "text"]
    return html.unescape("".join(p.get_payload(decode=True).decode(p.get_content_charset() or "utf-8") for p in parts))


@pytest.fixture
def smtp_sink() -> Iterator[tuple[int, list[Any]]]:
    from aiosmtpd.controller import Controller

    received: list[Any] = []

    class Handler:
        async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
            received.append(envelope)
            return "250 OK"

    port = _free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]], dict[str, int]]]:
    received: list[dict[str, Any]] = []
    status = {"code": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server hook name
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.append(
                {"path": self.path, "type": self.headers.get("Content-Type"), "json": json.loads(body)}
            )
            self.send_response(status["code"])
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received, status
    finally:
        server.shutdown()
        server.server_close()


def test_email_alert_reaches_the_smtp_sink(smtp_sink) -> None:
    port, received = smtp_sink
    n = EmailAlertNotifier(
        event="drift",
        model="flights_delay",
        to=["oncall@example.com"],
        smtp_host="127.0.0.1",
        smtp_port=port,
        subject="[mlops] drift on {{ ti.dag_id }}",
        message="drifted: {{ ti.xcom_pull(task_ids='signal_drift')['drifted_columns'] }}",
        details_task_id="signal_drift",
        raise_on_error=True,
    )
    n(_context())
    assert len(received) == 1
    env = received[0]
    assert env.rcpt_tos == ["oncall@example.com"]
    msg = message_from_bytes(env.content)
    assert msg["Subject"] == "[mlops] drift on flights_delay__monitor"
    assert msg["From"] == "airflow-mlops@localhost"
    body = _body(msg)
    assert "drifted: ['temp', 'month']" in body and '"share": 0.5' in body


def test_webhook_alert_posts_slack_compatible_json(webhook) -> None:
    url, received, _ = webhook
    n = WebhookAlertNotifier(
        event="circuit_breaker",
        model="flights_delay",
        url=url + "/hooks/abc",
        message="3 challengers rejected",
        details_task_id="signal_drift",
        raise_on_error=True,
    )
    n(_context())
    (hit,) = received
    assert hit["path"] == "/hooks/abc" and hit["type"] == "application/json"
    payload = hit["json"]
    assert payload["event"] == "circuit_breaker" and payload["model"] == "flights_delay"
    assert (
        payload["text"].startswith("[mlops] circuit breaker on flights_delay")
        and "3 challengers" in payload["text"]
    )
    assert payload["details"] == DRIFT and payload["dag_id"] == "flights_delay__monitor"


def test_webhook_url_from_an_airflow_connection(webhook, monkeypatch) -> None:
    url, received, _ = webhook
    host = url.removeprefix("http://")
    monkeypatch.setenv(
        "AIRFLOW_CONN_SLACK_ALERTS",
        json.dumps(
            {
                "conn_type": "http",
                "host": host.split(":")[0],
                "port": int(host.split(":")[1]),
                "schema": "http",
                "password": "/services/T0/B0/secret",
            }
        ),
    )
    WebhookAlertNotifier(event="drift", model="m", http_conn_id="slack_alerts", raise_on_error=True)(
        _context()
    )
    assert received[0]["path"] == "/services/T0/B0/secret"


def test_delivery_failures_are_logged_not_raised_unless_asked(webhook, caplog) -> None:
    url, received, status = webhook
    status["code"] = 500
    # no exception: alerts never break a run
    WebhookAlertNotifier(event="drift", model="m", url=url)(_context())
    assert len(received) == 1
    with pytest.raises(AlertDeliveryError, match="HTTP 500"):
        WebhookAlertNotifier(event="drift", model="m", url=url, raise_on_error=True)(_context())
    dead = f"http://127.0.0.1:{_free_port()}/hook?token=SECRET"
    with pytest.raises(AlertDeliveryError, match="unreachable") as err:
        WebhookAlertNotifier(event="drift", model="m", url=dead, raise_on_error=True)(_context())
    assert "SECRET" not in str(err.value)
    with pytest.raises(AlertDeliveryError):
        EmailAlertNotifier(
            event="drift",
            model="m",
            to=["a@b"],
            smtp_host="127.0.0.1",
            smtp_port=_free_port(),
            timeout=2,
            raise_on_error=True,
        )(_context())


def test_log_notifier_and_payload() -> None:
    n = LogAlertNotifier(event="performance", model="m", message="roc_auc dropped 0.08")
    n(_context())
    assert n.last_payload is not None and n.last_payload["event"] == "performance"
    with pytest.raises(ValueError, match="unknown alert event"):
        LogAlertNotifier(event="oops", model="m")


def test_build_notifiers_filters_by_event_and_validates_config() -> None:
    targets = [
        AlertTarget(type="log"),
        AlertTarget(type="email", events=["circuit_breaker"], to=["x@example.com"], smtp_host="127.0.0.1"),
        AlertTarget(type="webhook", events=["drift", "performance"], url="http://127.0.0.1:9/x"),
    ]
    kinds = {
        e: [type(n).__name__ for n in build_notifiers(targets, e, model="m")]
        for e in ("drift", "performance", "circuit_breaker")
    }
    assert kinds == {
        "drift": ["LogAlertNotifier", "WebhookAlertNotifier"],
        "performance": ["LogAlertNotifier", "WebhookAlertNotifier"],
        "circuit_breaker": ["LogAlertNotifier", "EmailAlertNotifier"],
    }
    with pytest.raises(ValueError, match="needs 'to'"):
        AlertTarget(type="email", smtp_host="h")
    with pytest.raises(ValueError, match="needs 'url' or 'http_conn_id'"):
        AlertTarget(type="webhook")


def test_yaml_alerts_reach_the_dags(tmp_path: Path, smtp_sink) -> None:
    """monitoring.alerts in the YAML -> drift notifiers on signal_drift, breaker notifiers on approve_retrain."""
    import shutil

    from mlops_provider.factory import build_dags

    port, received = smtp_sink
    data = yaml.safe_load((REPO / "dags" / "flights_delay.yaml").read_text())
    data["monitoring"]["alerts"] = [
        {
            "type": "email",
            "events": ["drift", "circuit_breaker"],
            "to": ["oncall@example.com"],
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
        },
    ]
    shutil.copytree(
        REPO / "feature_repo", tmp_path / "feature_repo", ignore=shutil.ignore_patterns("__pycache__")
    )
    (tmp_path / "dags").mkdir()
    path = tmp_path / "dags" / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    dags = build_dags(load_config(path))
    (drift_alert,) = dags["flights_delay__monitor"].get_task("signal_drift").on_success_callback
    (breaker_alert,) = dags["flights_delay__training"].get_task("approve_retrain").notifiers
    assert breaker_alert.event == "circuit_breaker"
    drift_alert(_context())
    assert len(received) == 1 and "data drift detected" in message_from_bytes(received[0].content)["Subject"]


def test_signal_alerts_fire_only_for_their_cause(webhook) -> None:
    """signal_drift succeeds on drift OR a performance drop: each alert checks the signal's evidence."""
    url, received, _ = webhook

    class TI(_TI):
        def __init__(self, details: dict[str, Any]) -> None:
            self.details = details

        def xcom_pull(self, task_ids: str) -> Any:
            return self.details

    def fire(event: str, details: dict[str, Any]) -> None:
        kw: dict[str, Any] = (
            {"only_if": "drift"}
            if event == "drift"
            else {"only_if": "performance.degraded", "only_if_missing": False}
        )
        (n,) = build_notifiers(
            [AlertTarget(type="webhook", url=url)], event, model="m", details_task_id="signal_drift", **kw
        )
        n({"ti": TI(details)})

    perf_only = {"drift": False, "performance": {"degraded": True, "roc_auc": 0.61}}
    fire("drift", perf_only)
    fire("performance", perf_only)
    assert [r["json"]["event"] for r in received] == ["performance"]
    fire("drift", {"drift": True, "drifted_columns": ["temp"]})
    fire("performance", {"drift": True})  # no performance section: no performance alert
    fire("drift", {"drifted_columns": ["temp"]})  # an older signal without the flag still means drift
    assert [r["json"]["event"] for r in received] == ["performance", "drift", "drift"]


def test_email_through_an_smtp_connection_uses_the_smtp_provider(smtp_sink, monkeypatch) -> None:
    """smtp_conn_id: the smtp provider's connection type and SmtpHook deliver (not a hand-rolled client)."""
    from airflow.providers.smtp.hooks.smtp import SmtpHook

    port, received = smtp_sink
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_ALERTS",
        json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": port,
                "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0},
            }
        ),
    )
    calls: list[dict[str, Any]] = []
    original = SmtpHook.send_email_smtp

    def spy(self: Any, **kw: Any) -> None:
        calls.append(kw)
        original(self, **kw)

    monkeypatch.setattr(SmtpHook, "send_email_smtp", spy)
    EmailAlertNotifier(
        event="circuit_breaker", model="m", to=["a@example.com", "b@example.com"], smtp_conn_id="smtp_alerts",
        details_task_id="signal_drift", raise_on_error=True,
    )(_context())
    assert len(calls) == 1 and calls[0]["to"] == ["a@example.com", "b@example.com"]
    (env,) = received
    assert sorted(env.rcpt_tos) == ["a@example.com", "b@example.com"]
    assert '"drifted_columns"' in _body(message_from_bytes(env.content))


def test_webhook_goes_through_the_http_provider(webhook, monkeypatch) -> None:
    from airflow.providers.http.hooks.http import HttpHook

    url, received, _ = webhook
    endpoints: list[Any] = []
    original = HttpHook.run

    def spy(self: Any, endpoint: Any = None, *a: Any, **kw: Any) -> Any:
        endpoints.append(endpoint)
        return original(self, endpoint, *a, **kw)

    monkeypatch.setattr(HttpHook, "run", spy)
    WebhookAlertNotifier(event="drift", model="m", url=url + "/x/y?z=1", raise_on_error=True)(_context())
    assert endpoints == ["/x/y?z=1"] and received[0]["path"] == "/x/y?z=1"


def test_secrets_never_reach_logs_or_errors(webhook, smtp_sink, monkeypatch, caplog, capsys) -> None:
    """Webhook tokens (URL path / query, connection password) and SMTP passwords: not in any log line,
    success or failure, whatever the log level."""
    import logging

    caplog.set_level(logging.DEBUG)
    url, received, status = webhook
    host, port = url.removeprefix("http://").split(":")
    WebhookAlertNotifier(event="drift", model="m", url=url + "/hook/TOKEN1?key=TOKEN2")(_context())
    status["code"] = 500
    WebhookAlertNotifier(event="drift", model="m", url=url + "/hook/TOKEN1?key=TOKEN2")(_context())
    dead = f"http://127.0.0.1:{_free_port()}/services/TOKEN3"
    WebhookAlertNotifier(event="drift", model="m", url=dead)(_context())
    monkeypatch.setenv(
        "AIRFLOW_CONN_HOOK_SECRET",
        json.dumps({"conn_type": "http", "host": host, "port": int(port), "schema": "http",
                    "password": "/services/TOKEN4"}),
    )
    WebhookAlertNotifier(event="drift", model="m", http_conn_id="hook_secret")(_context())
    assert [r["path"] for r in received] == ["/hook/TOKEN1?key=TOKEN2"] * 2 + ["/services/TOKEN4"]
    smtp_port, _ = smtp_sink
    monkeypatch.setenv(
        "AIRFLOW_CONN_SMTP_SECRET",
        json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": smtp_port, "login": "alerts",
                    "password": "TOKEN5", "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0}}),
    )
    # the sink offers no AUTH: the login fails, and the failure is logged
    EmailAlertNotifier(event="drift", model="m", to=["x@example.com"], smtp_conn_id="smtp_secret")(_context())
    out = capsys.readouterr()
    printed = [line for line in (out.out + out.err).splitlines() if "[mail.log]" not in line]  # structlog
    records = [r.getMessage() for r in caplog.records if not r.name.startswith("mail.log")]
    logged = "\n".join(records + printed)
    assert "not delivered" in logged  # the failures were logged ...
    for token in ("TOKEN1", "TOKEN2", "TOKEN3", "TOKEN4", "TOKEN5"):
        assert token not in logged, token  # ... without the secrets
