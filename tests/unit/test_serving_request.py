"""Serving: request validation, the bundled service config, and smoke-test verdicts over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pydantic import ValidationError

from mlops_provider.exceptions import ConfigError, DeploymentError
from mlops_provider.runtime.serving.checks import smoke_test
from mlops_provider.runtime.serving.package import pinned_requirements, safe_name
from mlops_provider.runtime.serving.service import FlightRequest, load_service_config

GOOD = {
    "origin": "jfk",
    "carrier": "UA",
    "tailnum": "N14228",
    "sched_dep_hour": 17,
    "weekday": 4,
    "month": 6,
    "distance": 1400,
}


def test_good_request_is_normalised() -> None:
    r = FlightRequest.model_validate(GOOD)
    assert r.origin == "JFK" and r.distance == 1400.0 and r.request_id is None


@pytest.mark.parametrize(
    "change",
    [
        {"sched_dep_hour": 24},
        {"sched_dep_hour": -1},
        {"weekday": 7},
        {"month": 0},
        {"month": "june"},
        {"distance": 0},
        {"distance": float("nan")},
        {"distance": float("inf")},
        {"origin": ""},
        {"origin": "J F K"},
        {"carrier": "U"},
        {"tailnum": "N1;drop"},
        {"unexpected": 1},
        {"request_id": "x" * 200},
    ],
)
def test_bad_requests_are_rejected(change: dict) -> None:
    with pytest.raises(ValidationError):
        FlightRequest.model_validate({**GOOD, **change})


@pytest.mark.parametrize("missing", sorted(GOOD))
def test_every_field_is_required(missing: str) -> None:
    with pytest.raises(ValidationError, match=missing):
        FlightRequest.model_validate({k: v for k, v in GOOD.items() if k != missing})


def _config(tmp_path: Path) -> Path:
    p = tmp_path / "bento_config.json"
    p.write_text(
        json.dumps(
            {
                "model_name": "m",
                "model_tag": "m:v1",
                "model_version": "1",
                "bento_tag": "m_service:v1-x",
                "feature_repo": "/repo",
                "feature_service": "fs",
                "categorical": ["origin"],
                "numeric": ["temp"],
                "inference_log_dir": "/log",
            }
        )
    )
    return p


def test_service_config_file_and_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_BENTO_CONFIG", str(_config(tmp_path)))
    cfg = load_service_config()
    assert cfg.raw_columns == ["origin", "temp"] and cfg.threshold == 0.5
    monkeypatch.setenv("MLOPS_FEATURE_REPO", "/elsewhere")
    monkeypatch.setenv("MLOPS_DELAY_THRESHOLD", "0.3")
    cfg = load_service_config()
    assert cfg.feature_repo == "/elsewhere" and cfg.threshold == 0.3


def test_missing_service_config_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="package_bento"):
        load_service_config(tmp_path / "nope.json")


def test_tag_names_and_pins() -> None:
    assert safe_name("Flights Delay/V2") == "flights_delay_v2"
    with pytest.raises(DeploymentError):
        safe_name("///")
    reqs = pinned_requirements(["pandas>=1", "torch==2.13.0", "# comment", "-r other.txt"])
    names = [r.split("==")[0].split(">=")[0].lower() for r in reqs]
    assert "bentoml" in names and "torch" in names and names.count("pandas") == 1
    assert not any(r.startswith(("#", "-")) for r in reqs)
    assert next(r for r in reqs if r.lower().startswith("pandas")).startswith("pandas==")  # serving pin wins
    from importlib.metadata import version

    # an unpinned model requirement is pinned to the installed version; unknown ones stay as given
    assert f"pyyaml=={version('pyyaml')}" in pinned_requirements(["pyyaml", "not-installed-pkg-xyz"])
    assert "not-installed-pkg-xyz" in pinned_requirements(["not-installed-pkg-xyz"])


# ------------------------------------------------------------------ smoke test against a real HTTP server
class _Handler(BaseHTTPRequestHandler):
    reply: tuple[int, str] = (200, "[]")
    seen: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        status, text = type(self).reply
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(text.encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[tuple[str, type[_Handler]]]:
    handler = type("H", (_Handler,), {"seen": []})
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}", handler
    finally:
        srv.shutdown()
        srv.server_close()


def test_smoke_test_accepts_a_good_answer(server) -> None:
    url, handler = server
    handler.reply = (
        200,
        '[{"request_id": "a", "model_version": "3", "probability": 0.25, "delayed": false}]',
    )
    out = smoke_test(url, GOOD, headers={"Authorization": "Bearer t"})
    assert out["probability"] == 0.25 and out["model_version"] == "3"
    seen = handler.seen[0]
    assert seen["path"] == "/predict" and seen["auth"] == "Bearer t"
    assert seen["body"]["requests"][0]["request_id"].startswith("smoke-")


@pytest.mark.parametrize(
    "reply",
    [
        (500, '{"error": "boom"}'),
        (400, '{"error": "bad"}'),
        (200, "not json"),
        (200, "[]"),
        (200, '[{"request_id": "a"}]'),
        (200, '[{"probability": NaN}]'),
        (200, '[{"probability": 1.5}]'),
        (200, '[{"probability": -0.1}]'),
        (200, '[{"probability": "0.3"}]'),
        (200, '[{"probability": true}]'),
    ],
)
def test_smoke_test_rejects_bad_answers(server, reply: tuple[int, str]) -> None:
    url, handler = server
    handler.reply = reply
    with pytest.raises(DeploymentError, match="Smoke test"):
        smoke_test(url, GOOD)


def test_smoke_test_unreachable_endpoint() -> None:
    with pytest.raises(DeploymentError, match="could not reach"):
        smoke_test("http://127.0.0.1:9", GOOD, timeout=2)
