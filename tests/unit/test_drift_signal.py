"""Unit tests of the drift operators' Airflow glue (no Evidently, no MLflow, no files but tmp)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from airflow.sdk import Asset
from airflow.sdk.exceptions import AirflowSkipException
from airflow.sdk.execution_time.context import OutletEventAccessors

from mlops_provider.exceptions import DriftError
from mlops_provider.links.drift import DriftReportLink
from mlops_provider.operators.drift import DriftReportOperator, DriftSignalOperator, _as_result, _iso

DRIFT_ASSET = Asset("drift/flights_delay")

DRIFTED = {
    "drift": True,
    "status": "ok",
    "share": 0.5,
    "threshold": 0.3,
    "drifted_columns": ["temp", "dewp", "month"],
    "n_current": 1234,
    "window": {"start": "2013-07-01T00:00:00+00:00", "end": "2013-07-02T00:00:00+00:00"},
    "report": {"html": "/tmp/r/drift.html", "json": "/tmp/r/drift.json"},
    "model": "flights_delay",
    "model_version": "3",
}


def _signal(result, outlets=(DRIFT_ASSET,)) -> tuple[DriftSignalOperator, dict]:
    op = DriftSignalOperator(task_id="drift_signal", result=result, outlets=list(outlets))
    return op, {"outlet_events": OutletEventAccessors()}


def test_signal_sets_outlet_extras_on_drift():
    op, context = _signal(DRIFTED)
    extra = op.execute(context)
    event = context["outlet_events"][DRIFT_ASSET]
    assert event.extra == extra
    assert event.extra["share"] == 0.5
    assert event.extra["drifted_columns"] == ["temp", "dewp", "month"]
    assert event.extra["model_version"] == "3"
    assert event.extra["window"]["start"].startswith("2013-07-01")
    assert event.extra["report_html"] == "/tmp/r/drift.html"
    json.dumps(event.extra)  # asset event extras must be JSON


@pytest.mark.parametrize(
    "result",
    [
        {**DRIFTED, "drift": False, "share": 0.1},
        {**DRIFTED, "drift": False, "status": "no_traffic", "n_current": 0},
        {**DRIFTED, "drift": False, "status": "insufficient_data", "n_current": 12},
        {**DRIFTED, "drift": "True"},  # only a real True signals
    ],
)
def test_signal_skips_without_drift_and_emits_nothing(result):
    op, context = _signal(result)
    with pytest.raises(AirflowSkipException, match="No drift signal"):
        op.execute(context)
    assert context["outlet_events"][DRIFT_ASSET].extra == {}


def test_signal_accepts_rendered_templates():
    # '{{ ti.xcom_pull(...) }}' renders a dict as its Python repr unless native rendering is on
    op, context = _signal(repr(DRIFTED))
    assert op.execute(context)["drifted_columns"] == ["temp", "dewp", "month"]
    op, context = _signal(json.dumps(DRIFTED))
    assert op.execute(context)["share"] == 0.5


def test_signal_rejects_garbage_result():
    with pytest.raises(DriftError, match="xcom"):
        _as_result("not a dict")


def test_iso_window_bounds():
    assert _iso(None) is None and _iso("") is None and _iso("None") is None
    assert _iso("2013-07-01T00:00:00+00:00") == "2013-07-01T00:00:00+00:00"
    with pytest.raises(DriftError, match="ISO-8601"):
        _iso("yesterday")


def _report_op(**kw) -> DriftReportOperator:
    return DriftReportOperator(
        task_id="drift_report", model_name="flights_delay", inference_log_dir="/nonexistent/log",
        features={"categorical": ["origin"], "numeric": ["temp"]}, report_dir="/nonexistent/reports", **kw,
    )


def test_report_window_defaults_to_data_interval_then_whole_log():
    from datetime import UTC, datetime

    start, end = datetime(2013, 7, 1, tzinfo=UTC), datetime(2013, 7, 2, tzinfo=UTC)
    op = _report_op()
    assert op._window({"data_interval_start": start, "data_interval_end": end}) == (
        start.isoformat(), end.isoformat()
    )
    # manual / asset-triggered runs: empty interval -> whole log
    assert op._window({"data_interval_start": start, "data_interval_end": start}) == (None, None)
    assert op._window({}) == (None, None)
    # explicit (rendered) bounds win
    op = _report_op(window_start="2013-08-01T00:00:00+00:00", window_end="None")
    assert op._window({"data_interval_start": start, "data_interval_end": end}) == (
        "2013-08-01T00:00:00+00:00", None
    )


def test_report_operator_constructor_does_no_io_and_templates_window():
    op = _report_op(window_start="{{ data_interval_start }}")
    assert "window_start" in op.template_fields and "window_end" in op.template_fields
    assert op.features == {"categorical": ["origin"], "numeric": ["temp"]}
    assert any(isinstance(link, DriftReportLink) for link in op.operator_extra_links)


def test_link_url_is_the_plugin_route_of_the_report(tmp_path, monkeypatch):
    """Airflow 3.3's UI does not render file:// links: the report opens through the MLOps plugin."""
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "http://127.0.0.1:8080")
    html = tmp_path / "r.html"
    assert DriftReportLink.url_for(str(html), "m") == "/mlops/models/m/reports/drift/r.html"
    assert DriftReportLink.url_for(None, "m") is None

    pushed = {}

    class _TI:
        def xcom_push(self, key, value):
            pushed[key] = value

    assert DriftReportLink.persist({"ti": _TI()}, str(html), "m") == "/mlops/models/m/reports/drift/r.html"
    assert pushed == {DriftReportLink.key: "/mlops/models/m/reports/drift/r.html"}
    assert DriftReportLink().xcom_key == DriftReportLink.key


def test_operator_modules_are_parse_safe():
    code = (
        "import sys; import mlops_provider.operators.drift, mlops_provider.links.drift; "
        "heavy = [m for m in ('pandas', 'numpy', 'evidently', 'mlflow', 'pyarrow') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"heavy modules imported at parse time: {out.stdout.strip()}"
