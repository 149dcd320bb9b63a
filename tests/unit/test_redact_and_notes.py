"""Credentials never reach a message; skips log their reason; run notes; MLflow's INFO lines are not errors."""

from __future__ import annotations

import io
import logging
import sys
from types import SimpleNamespace

import pytest

from mlops_provider.redact import redact_text, redact_url

SECRET = "s3cr3t-pa55"


@pytest.mark.parametrize("url,expected", [
    (f"http://user:{SECRET}@mlflow:5000", "http://user:***@mlflow:5000"),
    (f"https://{SECRET}@host/x", "https://***@host/x"),
    (f"postgresql+psycopg://feast:{SECRET}@db:5432/registry", "postgresql+psycopg://feast:***@db:5432/registry"),
    (f"https://bucket.s3.amazonaws.com/k?X-Amz-Signature={SECRET}&a=1", "https://bucket.s3.amazonaws.com/k?X-Amz-Signature=***&a=1"),
    ("http://mlflow:5000/path", "http://mlflow:5000/path"),
    ("not a url", "not a url"),
    (None, ""),
])
def test_redact_url(url, expected) -> None:
    assert redact_url(url) == expected
    assert SECRET not in redact_url(url)


def test_redact_text_strips_every_url_in_a_message() -> None:
    msg = (f"HTTPConnectionPool(host='h'): Max retries exceeded with url: http://u:{SECRET}@h:5000/api "
           f"(caused by x); also 'redis://:{SECRET}@cache:6379/0'")
    out = redact_text(msg)
    assert SECRET not in out and "http://u:***@h:5000/api" in out and "redis://:***@cache:6379/0" in out


def test_mlflow_unreachable_error_has_no_credentials() -> None:
    from mlops_provider.hooks.mlflow import MlflowUnreachableError, check_reachable

    def probe():
        raise ConnectionError(f"Failed to connect to http://user:{SECRET}@127.0.0.1:1/api/2.0")

    with pytest.raises(MlflowUnreachableError) as e:
        check_reachable(f"http://user:{SECRET}@127.0.0.1:1", attempts=1, probe=probe)
    assert SECRET not in str(e.value) and "http://user:***@127.0.0.1:1" in str(e.value)


def test_userinfo_in_the_tracking_uri_becomes_credentials(monkeypatch) -> None:
    from mlops_provider.hooks.mlflow import MLflowHook

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"https://alice:{SECRET}@mlflow.example.com")
    monkeypatch.setattr(MLflowHook, "_lookup_connection", lambda self: None)
    cfg = MLflowHook("none").tracking_config()
    assert cfg.tracking_uri == "https://mlflow.example.com"
    assert cfg.credentials == {"MLFLOW_TRACKING_USERNAME": "alice", "MLFLOW_TRACKING_PASSWORD": SECRET}
    assert SECRET not in repr(cfg) and SECRET not in str(cfg.public())


def test_connection_host_with_userinfo(monkeypatch) -> None:
    from mlops_provider.hooks.mlflow import MLflowHook

    conn = SimpleNamespace(host=f"http://bob:{SECRET}@mlflow:5000", port=None, schema=None, login=None,
                           password=None, extra_dejson={})
    monkeypatch.setattr(MLflowHook, "_lookup_connection", lambda self: conn)
    hook = MLflowHook("m")
    cfg = hook.tracking_config()
    assert SECRET not in cfg.tracking_uri and cfg.credentials["MLFLOW_TRACKING_PASSWORD"] == SECRET
    monkeypatch.setattr(MLflowHook, "get_client", lambda self: (_ for _ in ()).throw(OSError(
        f"cannot reach http://bob:{SECRET}@mlflow:5000")))
    ok, message = hook.test_connection()
    assert not ok and SECRET not in message


def test_skip_logs_the_reason_at_info_before_raising(caplog) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    from mlops_provider.operator_notes import skip

    log = logging.getLogger("test.skip")
    with caplog.at_level(logging.INFO, logger="test.skip"), pytest.raises(AirflowSkipException) as e:
        skip(f"no drift (report http://u:{SECRET}@h/r)", log=log)
    assert "no drift" in str(e.value) and SECRET not in str(e.value)
    (record,) = [r for r in caplog.records if r.name == "test.skip"]
    assert record.levelno == logging.INFO and "no drift" in record.getMessage()


def test_run_note_goes_through_the_rest_api(monkeypatch) -> None:
    import httpx

    from mlops_provider.hooks.airflow_api import AirflowApiHook
    from mlops_provider.operator_notes import NOTE_PREFIX, set_run_note

    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append((request.method, request.url.path, request.url.params.get("update_mask"), request.content))
        if request.method == "GET":
            return httpx.Response(200, json={"note": "checked by carol\nMLOps: old decision"})
        return httpx.Response(200, json={})

    client = httpx.Client(base_url="http://af/api/v2", transport=httpx.MockTransport(handler))
    monkeypatch.setattr(AirflowApiHook, "client", lambda self: client)
    ctx = {"dag_run": SimpleNamespace(dag_id="m__training", run_id="manual__1"), "ti": None}
    assert set_run_note(ctx, "rejected by the gate: v3: roc_auc.floor 0.6 vs bound 0.65")
    method, path, mask, body = calls[-1]
    assert (method, path, mask) == ("PATCH", "/api/v2/dags/m__training/dagRuns/manual__1", "note")
    assert b"checked by carol" in body and b"old decision" not in body
    assert (NOTE_PREFIX + "rejected by the gate").encode() in body


def test_run_note_without_a_connection_is_logged_not_raised(monkeypatch, caplog) -> None:
    from mlops_provider.hooks.airflow_api import AirflowApiHook
    from mlops_provider.operator_notes import set_run_note

    monkeypatch.setattr(AirflowApiHook, "_connection", lambda self: None)
    ctx = {"dag_run": SimpleNamespace(dag_id="m__training", run_id="r"), "ti": None}
    with caplog.at_level(logging.INFO):
        assert set_run_note(ctx, "declined by guards: cooldown") is False
    assert any("declined by guards" in r.getMessage() for r in caplog.records)


def test_mlflow_info_output_goes_through_logging_not_stderr(monkeypatch) -> None:
    """Airflow's supervisor logs a task's stderr at ERROR: MLflow's INFO must not go there."""
    import mlflow  # noqa: F401 - configures its loggers with a stderr handler
    from mlflow.utils import logging_utils

    from mlops_provider.operator_notes import route_library_logging

    fake_stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", fake_stderr)
    monkeypatch.setattr(logging_utils, "MLFLOW_LOGGING_STREAM", logging_utils.MLFLOW_LOGGING_STREAM)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    root = logging.getLogger()
    keep = Keep(level=logging.DEBUG)
    root.addHandler(keep)
    monkeypatch.setattr(root, "level", logging.INFO)
    try:
        route_library_logging()
        logging.getLogger("mlflow.store.db.utils").info("Creating initial MLflow database tables...")
        logging_utils.eprint("Successfully registered model 'm'.")
    finally:
        root.removeHandler(keep)
    assert fake_stderr.getvalue() == ""
    levels = {r.getMessage(): r.levelno for r in records}
    assert levels.get("Creating initial MLflow database tables...") == logging.INFO
    assert levels.get("Successfully registered model 'm'.") == logging.INFO


def test_advisory_failures_are_not_plain_fail() -> None:
    from mlops_provider.operator_notes import advisory_label

    assert advisory_label(True) == "PASS" and advisory_label(False) == "FAIL"
    assert advisory_label(False, enforced=False).startswith("ADVISORY FAIL")


def test_approval_is_recorded_on_the_version_and_noted(monkeypatch) -> None:
    from datetime import UTC, datetime

    import mlops_provider.operator_notes as notes

    tags: dict = {}
    notes_set: list = []

    class Client:
        def set_model_version_tag(self, model, version, key, value):
            tags[(model, version, key)] = value

    class Hook:
        def __init__(self, *a, **k):
            pass

        def get_client(self):
            return Client()

    monkeypatch.setattr("mlops_provider.hooks.mlflow.MLflowHook", Hook)
    monkeypatch.setattr(notes, "set_run_note", lambda ctx, note, **k: notes_set.append(note))
    op = SimpleNamespace(model_name="m", mlflow_conn_id="x", log=logging.getLogger("t"))
    ctx = {"dag_run": SimpleNamespace(dag_id="m__training", run_id="r1"), "ti": None}
    event = {"chosen_options": ["Reject"], "responded_by_user": {"id": "7", "name": "alice"},
             "responded_at": datetime(2026, 1, 2, tzinfo=UTC), "params_input": {"comment": "too risky"}}
    notes.record_approval(op, ctx, {"challenger": {"version": "3"}}, event)
    assert tags[("m", "3", "mlops.approval.decision")] == "rejected"
    assert tags[("m", "3", "mlops.approval.by")] == "alice"
    assert tags[("m", "3", "mlops.approval.comment")] == "too risky"
    assert tags[("m", "3", "mlops.approval.at")].startswith("2026-01-02")
    assert notes_set == ["rejected by alice: v3: too risky"]
    notes.record_approval(op, ctx, {"challenger": {"version": "4"}}, {**event, "chosen_options": ["Approve"]})
    assert tags[("m", "4", "mlops.approval.decision")] == "approved"
