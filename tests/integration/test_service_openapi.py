"""The published OpenAPI document matches what the service does: a schemathesis run with ALL checks.

One ``bentoml serve`` of a bento whose request schema is generated from the feature service and the example
YAML's ``serving.request`` (patterns, ranges), plus an optional field with a default and a small batch limit
(so generated arrays stay small). ``schemathesis run --checks all`` (server errors, status codes, content
types, headers, response bodies against their schemas, schema-violating requests rejected, schema-valid
requests accepted, undeclared methods answered 405 with ``Allow``, ...) generates at least 1,000 cases for
every operation that takes input (``/predict``, ``/score_batch``), 200 for the others, and must find nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest_serving import (
    FEATURE_SERVICE,
    FEATURES,
    GOOD_REQUEST,
    MODEL_NAME,
    ServingWorld,
    serve_bento,
    serving_world_fixture,  # noqa: F401 - the `serving_world` fixture
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CASES_PER_OPERATION = 1000
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def served(serving_world: ServingWorld) -> Iterator[dict]:
    from mlops_provider.config import load_config
    from mlops_provider.runtime.serving.package import package_bento

    w = serving_world
    serving = load_config(REPO / "dags" / "flights_delay.yaml").serving.model_dump()
    serving["request"]["fields"]["weekday"]["default"] = 0  # an optional field
    serving["limits"] = {**serving["limits"], "max_batch_rows": 4}
    pkg = package_bento(
        MODEL_NAME, "champion", w.tracking_uri, str(w.feature_repo), FEATURE_SERVICE, FEATURES,
        str(w.home / "inference_log_fuzz"), bentoml_home_dir=w.bentoml_home, serving=serving,
        limits={"max_scoring_rows": 4}, log_flush_interval_s=1.0,
    )
    with serve_bento(w, pkg["bento_tag"], "fuzz-serve") as server:
        yield server


def _schemathesis(url: str, report_dir: Path, examples: int, paths: str) -> Counter[str]:
    """Run ``schemathesis run --checks all`` on the operations matching ``paths``; cases per operation."""
    st = Path(sys.executable).with_name("schemathesis")
    cmd = [
        str(st), "run", f"{url}/docs.json",
        "--checks", "all",
        "--max-examples", str(examples),
        "--include-path-regex", paths,
        "--workers", "4",
        "--seed", "20240601",
        "--suppress-health-check", "all",
        "--generation-database", "none",
        "--request-timeout", "30",
        "--report", "ndjson", "--report-dir", str(report_dir),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=840, cwd=report_dir)
    assert out.returncode == 0, out.stdout[-6000:] + out.stderr[-2000:]
    cases: Counter[str] = Counter()
    for report in report_dir.glob("*.ndjson"):
        for line in report.read_text().splitlines():
            finished = json.loads(line).get("ScenarioFinished")
            if finished:
                rec = finished["recorder"]
                cases[rec["label"]] += len(rec.get("interactions") or {})
    return cases


def test_schemathesis_all_checks_find_no_mismatch(served: dict, tmp_path: Path) -> None:
    url = served["url"]
    # the operations that take input: at least CASES_PER_OPERATION generated cases each (one run per operation:
    # with several operations in one run, schemathesis shares the fuzzing budget between them)
    for name in ("predict", "score_batch"):
        (tmp_path / name).mkdir()
        cases = _schemathesis(url, tmp_path / name, CASES_PER_OPERATION, f"^/{name}$")
        assert cases[f"POST /{name}"] >= CASES_PER_OPERATION, cases
    # the rest of the document (/health takes no input; the probes; /metrics): every check, fewer cases
    (tmp_path / "rest").mkdir()
    rest = _schemathesis(url, tmp_path / "rest", 200, "^/(health|healthz|livez|readyz|metrics)$")
    assert {"POST /health", "GET /readyz", "GET /livez", "GET /healthz", "GET /metrics"} <= set(rest), rest
    # the server survived it all, and no client error logged a traceback
    assert served["proc"].poll() is None
    r = httpx.post(f"{url}/predict", json={"requests": [GOOD_REQUEST]}, timeout=30)
    assert r.status_code == 200, r.text
    log = served["log"].read_text(errors="replace")
    assert "Traceback" not in log and "[ERROR]" not in log, log[-3000:]
