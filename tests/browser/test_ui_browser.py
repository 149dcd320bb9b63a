"""A real browser against the embedded Airflow: login page, a task's extra links, the MLOps page, logged out.

Setup (about 1.5 minutes): the state the pipelines leave behind is crafted under a temporary MLOPS_HOME
(an MLflow registry with a promotion, a gate rejection, a human rejection and a force-promote, their
verdicts and model cards, drift and validation reports: ``tests/ui_fixtures.py``); the embedded Airflow
starts on loopback with ``dags/`` and ``plugins/`` (every DAG paused but the force-promote one). Then:

- a **real task** runs: ``flights_delay__force_promote`` (form: version + reason) moves ``@champion`` in
  MLflow and, from inside the task, sets its DAG run's note through the REST API (the embedded
  ``airflow_api_default`` connection); its log has no ERROR line (MLflow's INFO goes through logging);
- three training runs stand for a promotion, a gate rejection and a guard decline: their links (the XCom
  values the operators push, computed by the same link classes) and notes (``operator_notes.set_run_note``,
  the operators' code path) go through the real REST API;
- headless Chromium (Debian's, over the DevTools protocol) logs in through Airflow's login page, opens the
  gate task's Details tab, finds every extra link rendered and opens each (200 logged in), opens the MLOps
  page (tables and SVG charts render, the DAG links target ``_top``), the nav entry and the runs list,
  then logs out: every link answers 401.

Screenshots go to a temporary folder printed at the end (and to ``$MLOPS_TEST_ARTIFACTS`` when set).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))

from cdp import Browser, chromium_binary  # noqa: E402

MODEL = "flights_delay"
# skipped without chromium on a developer's machine; in CI (CI=true, .ci/run installs it) a missing browser fails
pytestmark = [pytest.mark.system, pytest.mark.slow,
              pytest.mark.skipif(chromium_binary() is None and not os.environ.get("CI"),
                                 reason="chromium missing: make browser-deps")]

NOTES = {
    "promoted": "promoted v1 to @champion (first champion)",
    "gate_rejected": "rejected by the gate: v2: roc_auc.floor 0.6200 vs bound 0.6500",
    "declined": "declined by guards: cooldown: the last retrain was 2 h ago (< 24 h)",
}


class Stack:
    def __init__(self, af: Any, api: Any, shots: Path, state: dict[str, Any]) -> None:
        self.af, self.api, self.shots, self.state = af, api, shots, state
        self.runs: dict[str, str] = {}
        self.force_run: str | None = None
        self.started = time.monotonic()


def _wait_state(api: Any, dag_id: str, run_id: str, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    state = ""
    while time.monotonic() < deadline:
        state = api.get(f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
        if state in ("success", "failed"):
            return state
        time.sleep(2)
    raise TimeoutError(f"{dag_id}/{run_id} still {state}")


def _post(api: Any, path: str, body: dict[str, Any]) -> None:
    """POST through the REST API, retried while the embedded SQLite database is locked (a 500)."""
    for attempt in range(5):
        r = api.client.post(path, json=body)
        if r.status_code < 500:
            r.raise_for_status()
            return
        time.sleep(2 * (attempt + 1))
    r.raise_for_status()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    from mlops_provider.embedded import EmbeddedAirflow, create_pools, free_port, wait_for
    from mlops_provider.links.drift import DriftReportLink
    from mlops_provider.links.gate import GateVerdictLink, ModelCardLink
    from mlops_provider.links.mlflow import MLflowRunLink
    from mlops_provider.links.validation import ValidationReportLink
    from ui_fixtures import craft_ui_state

    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="mlops-browser-"))
    shots = work / "screenshots"
    home = work / "mlops"
    home.mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLOPS_HOME", str(home))
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        state = craft_ui_state(home, work)
        af = EmbeddedAirflow(home=work / "airflow", dags_folder=REPO / "dags", plugins_folder=REPO / "plugins",
                             port=free_port(), paused_at_creation=True,
                             env={"MLOPS_HOME": str(home), "MLOPS_TRAINING_QUEUE": "default",
                                  "MLFLOW_TRACKING_URI": "", "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "5"})
        af.start()
        try:
            api = af.api()
            wait_for(lambda: {f"{MODEL}__training", f"{MODEL}__force_promote"} <= api.dag_ids(), "DAGs parsed", 180)
            create_pools(api, af.dags_folder)
            s = Stack(af, api, shots, state)
            # a real task: force-promote v2 through the manual DAG's form parameters
            api.unpause(f"{MODEL}__force_promote")
            s.force_run = api.trigger(f"{MODEL}__force_promote",
                                      {"version": 2, "reason": "browser test: v2 serves the new signature"})
            assert _wait_state(api, f"{MODEL}__force_promote", s.force_run) == "success"
            # training runs standing for the three decisions (their DAG stays paused: nothing executes)
            mp.setenv("AIRFLOW_CONN_AIRFLOW_API_DEFAULT", json.dumps(
                {"conn_type": "http", "host": af.url, "login": "admin", "password": af.password()}))
            from types import SimpleNamespace

            from mlops_provider.operator_notes import set_run_note

            dag = f"{MODEL}__training"
            for kind, note in NOTES.items():
                run_id = api.trigger(dag, {"mlops_test": kind})
                s.runs[kind] = run_id
                assert set_run_note({"dag_run": SimpleNamespace(dag_id=dag, run_id=run_id)}, note)
            run_id = s.runs["promoted"]
            wait_for(lambda: api.task_states(dag, run_id).get("gate") is not None, "task instances", 60)
            links = {
                GateVerdictLink.key: GateVerdictLink.url(MODEL, 1),
                ModelCardLink.key: ModelCardLink.url(MODEL, 1),
            }
            for key, value in links.items():
                _post(api, f"/dags/{dag}/dagRuns/{run_id}/taskInstances/gate/xcomEntries", {"key": key, "value": value})
            _post(api, f"/dags/{dag}/dagRuns/{run_id}/taskInstances/train/xcomEntries",
                  {"key": MLflowRunLink.key, "value": MLflowRunLink.url(None, state["runs"]["1"])})
            drift = sorted((state["reports"] / "drift").glob("*.html"))[-1]
            s.extra_urls = {  # type: ignore[attr-defined]
                "drift": DriftReportLink.url_for(str(drift), MODEL),
                "validation": ValidationReportLink.url_for("landing__manual__1.html", MODEL),
            }
            print(f"\n[browser] setup took {time.monotonic() - t0:.0f}s", flush=True)
            yield s
        finally:
            af.stop()
            out = os.environ.get("MLOPS_TEST_ARTIFACTS")
            if out and shots.exists():
                shutil.copytree(shots, Path(out) / "browser", dirs_exist_ok=True)
            print(f"\n[browser] screenshots in {shots}" + (f" (copied to {out}/browser)" if out else "")
                  + f"; wall time {time.monotonic() - t0:.0f}s", flush=True)


@pytest.fixture(scope="module")
def browser(stack: Stack) -> Iterator[Browser]:
    b = Browser()
    try:
        b.goto(f"{stack.af.url}/", wait="location.pathname.includes('/auth/login') || document.querySelector('nav')")
        b.wait("document.querySelector('input[name=username], input#username, input[type=text]')", what="login form")
        b.screenshot(stack.shots / "01-login.png", full_page=False)
        b.type_into("input[name=username], input#username, input[type=text]", "admin")
        b.type_into("input[type=password]", stack.af.password())
        b.js("document.querySelector('button[type=submit]').click()")
        b.wait("!location.pathname.includes('/auth/login') && document.cookie !== null", what="logged in")
        b.wait("document.body.innerText.includes('Dags') || document.body.innerText.includes('DAGs')",
               what="the Airflow home page", timeout=60)
        b.screenshot(stack.shots / "02-home.png", full_page=False)
        yield b
    finally:
        b.close()


def test_force_promote_task_noted_its_run_and_logged_no_error(stack: Stack) -> None:
    run = stack.api.get(f"/dags/{MODEL}__force_promote/dagRuns/{stack.force_run}")
    assert run["note"].startswith("MLOps: force_promote: v2 is @champion by admin"), run["note"]
    r = stack.api.client.get(f"/dags/{MODEL}__force_promote/dagRuns/{stack.force_run}/taskInstances/force_promote/"
                             "logs/1", params={"full_content": True}, headers={"Accept": "application/json"})
    r.raise_for_status()
    events = [e for e in r.json()["content"] if isinstance(e, dict)]
    errors = [e for e in events if str(e.get("level", "")).lower() in ("error", "critical")]
    assert not errors, errors[:5]
    assert any("force_promote of flights_delay to v2" in str(e.get("event")) for e in events)


def test_runs_tell_the_decisions_apart(stack: Stack, browser: Browser) -> None:
    """Airflow 3.3's runs table has no note column: the note shows on each run's page (and in the REST API,
    and in the MLOps page's training-runs table)."""
    notes = {r["dag_run_id"]: r.get("note") or "" for r in stack.api.runs(f"{MODEL}__training")}
    for kind, run_id in stack.runs.items():
        assert notes[run_id] == "MLOps: " + NOTES[kind]
    from urllib.parse import quote

    for i, (kind, run_id) in enumerate(stack.runs.items()):
        browser.goto(f"{stack.af.url}/dags/{MODEL}__training/runs/{quote(run_id, safe='')}",
                     wait=f"document.body.innerText.includes({json.dumps(NOTES[kind][:20])})", timeout=60)
        browser.screenshot(stack.shots / f"03-training-run-{i + 1}-{kind}.png", full_page=False)
    browser.resize(2300, 900)
    try:
        browser.goto(f"{stack.af.url}/dags/{MODEL}__training/runs", wait="document.body.innerText.includes('manual__')")
        browser.screenshot(stack.shots / "03-training-runs-list.png", full_page=False)
    finally:
        browser.resize(1440, 1000)


def test_every_extra_link_renders_and_opens(stack: Stack, browser: Browser) -> None:
    run_id = stack.runs["promoted"]
    url = f"{stack.af.url}/dags/{MODEL}__training/runs/{run_id}/tasks/gate/details"
    browser.goto(url, wait="document.body.innerText.includes('Model card')", timeout=90)
    browser.wait("document.body.innerText.includes('Gate verdict')", what="both gate links")
    browser.screenshot(stack.shots / "04-gate-task-details.png", full_page=False)
    hrefs = browser.js("Object.fromEntries([...document.querySelectorAll('a')].filter(a => "
                       "['Model card', 'Gate verdict'].includes(a.textContent.trim())).map(a => "
                       "[a.textContent.trim(), a.getAttribute('href')]))")
    assert set(hrefs) == {"Model card", "Gate verdict"}, hrefs
    browser.goto(f"{stack.af.url}/dags/{MODEL}__training/runs/{run_id}/tasks/train/details",
                 wait="document.body.innerText.includes('MLflow run')", timeout=90)
    hrefs["MLflow run"] = browser.js("[...document.querySelectorAll('a')].find(a => a.textContent.trim() === "
                                     "'MLflow run').getAttribute('href')")
    hrefs.update({"Drift report": stack.extra_urls["drift"],  # type: ignore[attr-defined]
                  "Validation report": stack.extra_urls["validation"]})  # type: ignore[attr-defined]
    for name, href in hrefs.items():
        assert href.startswith("/mlops/"), (name, href)
        assert browser.fetch_status(href) == 200, (name, href)
    browser.goto(f"{stack.af.url}{hrefs['Model card']}", wait="document.body.innerText.includes('Model card v1')")
    browser.screenshot(stack.shots / "05-model-card.png", full_page=False)
    browser.goto(f"{stack.af.url}{hrefs['Gate verdict']}", wait="document.querySelector('table.checks')")
    browser.screenshot(stack.shots / "06-gate-verdict.png")
    stack.hrefs = hrefs  # type: ignore[attr-defined]


def test_mlops_page_renders_tables_and_charts(stack: Stack, browser: Browser) -> None:
    browser.goto(f"{stack.af.url}/mlops/", wait="document.querySelector('#versions-flights_delay')")
    states = browser.js("[...document.querySelectorAll('tr.version')].map(r => r.dataset.state)")
    # v2 (rejected by the gate) was force-promoted by the real force_promote run above
    assert sorted(states) == ["forced", "forced", "promotable", "rejected"], states
    charts = browser.js("[...document.querySelectorAll('svg.chart')].map(s => s.querySelectorAll('circle, rect').length)")
    assert len(charts) >= 4 and all(n > 0 for n in charts), charts
    text = browser.js("document.body.innerText")
    for needle in ("rejected by alice", "force-promoted by", "declined by guards", "rejected by the gate",
                   "promoted v1", "browser test: v2 serves the new signature"):
        assert needle in text, needle
    assert browser.js("[...document.querySelectorAll('a[href*=\"/dags/\"]')].every(a => a.target === '_top')")
    browser.screenshot(stack.shots / "07-mlops-page.png")
    browser.goto(f"{stack.af.url}/plugin/mlops", wait="document.querySelector('iframe')", timeout=60)
    browser.wait("[...document.querySelectorAll('a, button')].some(e => e.textContent.trim() === 'MLOps')",
                 what="the MLOps nav entry")
    time.sleep(3)
    browser.screenshot(stack.shots / "08-mlops-in-airflow-nav.png", full_page=False)
    browser.goto(f"{stack.af.url}/mlops/docs", wait="document.querySelector('table')")
    assert browser.js("document.querySelectorAll('script[src], link[href^=\"http\"]').length") == 0


def test_logged_out_every_link_is_401(stack: Stack, browser: Browser) -> None:
    import httpx

    hrefs = getattr(stack, "hrefs", None) or {}
    routes = ["/mlops/", "/mlops/docs", "/mlops/api/models", f"/mlops/models/{MODEL}/endpoint", *hrefs.values()]
    for route in routes:
        assert httpx.get(f"{stack.af.url}{route}", timeout=30).status_code == 401, route
    browser.clear_cookies()
    browser.goto(f"{stack.af.url}/mlops/")
    assert "Not authenticated" in browser.js("document.body.innerText")
    assert browser.fetch_status("/mlops/api/models") == 401
    browser.screenshot(stack.shots / "09-logged-out-401.png", full_page=False)
    print(f"\n[browser] test body took {time.monotonic() - stack.started:.0f}s after setup", flush=True)
