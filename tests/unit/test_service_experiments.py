"""Online experiments: sticky hash routing, split / shadow scoring, the variant comparison; the service's
request guard (body limit, content type) as a real ASGI app; the bento config's limits and experiment."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError

from mlops_provider.runtime.serving.experiments import (
    ExperimentSpec,
    assign,
    bucket,
    compare_variants,
    routing_key,
    run_experiment,
)


def _spec(**kw: object) -> ExperimentSpec:
    return ExperimentSpec(challenger_tag="m:v2", challenger_version="2", **kw)  # type: ignore[arg-type]


def _rows(n: int) -> list[dict]:
    return [{"origin": "JFK", "carrier": "UA", "tailnum": f"N{i}"} for i in range(n)]


def test_bucket_is_deterministic_uniform_and_salted() -> None:
    assert bucket("N1", "exp") == bucket("N1", "exp")
    assert bucket("N1", "exp") != bucket("N1", "other")
    values = np.array([bucket(f"N{i}", "exp") for i in range(20_000)])
    assert 0.0 <= values.min() and values.max() < 1.0
    assert abs(values.mean() - 0.5) < 0.01 and abs((values < 0.01).mean() - 0.01) < 0.003
    assert routing_key({"origin": "JFK", "tailnum": "N1"}, ["origin", "tailnum"]) != routing_key(
        {"origin": "JF", "tailnum": "KN1"}, ["origin", "tailnum"]
    )


def test_split_share_is_sticky_and_close_to_the_configured_share() -> None:
    spec = _spec(mode="split", share=0.01)
    rows = _rows(50_000)
    mask = assign(rows, spec)
    assert abs(mask.mean() - 0.01) < 0.002  # a 99/1 forward test
    again = assign(list(reversed(rows)), spec)[::-1]
    assert (mask == again).all()  # by entity, not by position or arrival
    bigger = assign(rows, _spec(mode="split", share=0.05))
    assert (bigger[mask]).all()  # raising the share keeps every challenger entity on the challenger
    assert not assign(rows, _spec(mode="shadow", share=0.5)).any()
    assert not assign(rows, _spec(mode="split", share=0.0)).any()


def test_run_experiment_split_and_shadow() -> None:
    frame = pd.DataFrame({"x": np.arange(400, dtype=float)})
    rows = _rows(400)
    calls: list[int] = []

    def champ(f: pd.DataFrame) -> np.ndarray:
        calls.append(len(f))
        return np.full(len(f), 0.2)

    def chall(f: pd.DataFrame) -> np.ndarray:
        calls.append(-len(f))
        return np.full(len(f), 0.9)

    out = run_experiment(frame, rows, _spec(mode="split", share=0.3), champ, chall)
    k = int(out["to_challenger"].sum())
    assert 60 < k < 180 and sorted(calls) == [-k, 400 - k]  # each model scores only its rows
    assert (out["served"][out["to_challenger"]] == 0.9).all() and (
        out["served"][~out["to_challenger"]] == 0.2
    ).all()
    assert np.isnan(out["challenger"][~out["to_challenger"]]).all()
    out = run_experiment(frame, rows, _spec(mode="shadow"), champ, chall)
    assert (out["served"] == 0.2).all() and (out["challenger"] == 0.9).all()
    out = run_experiment(frame, rows, None, champ, None)
    assert (out["served"] == 0.2).all() and np.isnan(out["challenger"]).all()
    with pytest.raises(ValueError, match=r"shape \(3,\) for 400 rows"):
        run_experiment(frame, rows, None, lambda f: [0.1, 0.2, 0.3], None)


def test_run_experiment_with_2d_outputs_and_default_routing() -> None:
    """Multiclass (n x k) outputs keep their rows through the split; no route_by: every request field."""
    frame = pd.DataFrame({"x": np.arange(200, dtype=float)})
    rows = _rows(200)

    def champ(f: pd.DataFrame) -> np.ndarray:
        return np.tile([0.7, 0.2, 0.1], (len(f), 1))

    def chall(f: pd.DataFrame) -> np.ndarray:
        return np.tile([0.1, 0.1, 0.8], (len(f), 1))

    out = run_experiment(frame, rows, _spec(mode="split", share=0.5), champ, chall)
    to = out["to_challenger"]
    assert out["served"].shape == (200, 3) and 50 < to.sum() < 150
    assert (out["served"][to] == [0.1, 0.1, 0.8]).all() and (out["served"][~to] == [0.7, 0.2, 0.1]).all()
    assert np.isnan(out["champion"][to]).all() and np.isnan(out["challenger"][~to]).all()
    assert routing_key({"b": 1, "a": 2, "request_id": "x"}, []) == routing_key({"a": 2, "b": 1, "request_id": "y"}, [])
    with pytest.raises(ValueError, match="shape"):
        run_experiment(frame, rows, None, lambda f: np.zeros((len(f), 2, 2)), None)


def test_compare_variants_and_spec_validation() -> None:
    frame = pd.DataFrame(
        {
            "variant": ["champion", "champion", "challenger"],
            "model_version": ["1", "1", "2"],
            "prediction": [0.2, 0.4, 0.9],
            "champion_prediction": [0.2, 0.4, None],
            "challenger_prediction": [0.6, None, 0.9],
        }
    )
    out = compare_variants(frame)
    assert out["variants"]["champion"]["rows"] == 2 and out["variants"]["challenger"]["model_versions"] == [
        "2"
    ]
    assert out["paired"] == {"rows": 1, "mean_abs_diff": pytest.approx(0.4), "agreement_at_0_5": 0.0}
    assert compare_variants(pd.DataFrame()) == {"rows": 0, "variants": {}}
    assert _spec().name == "challenger-v2"
    with pytest.raises(ValidationError):
        _spec(mode="canary")
    with pytest.raises(ValidationError):
        _spec(share=1.5)


# ---------------------------------------------------------------------------------------- request guard
def _call(
    app, method: str, body: bytes | None, headers: dict[str, str], chunked: bool = False
) -> tuple[int, dict]:
    import httpx

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            if chunked:

                async def gen():
                    for i in range(0, len(body or b""), 100):
                        yield (body or b"")[i : i + 100]

                return await client.request(method, "/predict", content=gen(), headers=headers)
            return await client.request(method, "/predict", content=body, headers=headers)

    r = asyncio.run(go())
    return r.status_code, r.json()


def _echo_app():
    async def app(scope, receive, send):  # echoes the size of the body it received
        size = 0
        while True:
            m = await receive()
            size += len(m.get("body", b""))
            if not m.get("more_body"):
                break
        body = json.dumps({"size": size}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


def test_request_guard_limits_body_and_content_type() -> None:
    from mlops_provider.runtime.serving.guard import RequestGuardMiddleware

    app = RequestGuardMiddleware(_echo_app(), max_body_bytes=1000)
    js = {"content-type": "application/json"}
    assert _call(app, "POST", b"x" * 1000, js) == (200, {"size": 1000})
    status, body = _call(app, "POST", b"x" * 1001, js)
    assert status == 413 and "1001 bytes exceeds the limit of 1000" in body["error"]
    assert _call(app, "POST", b"x" * 900, js, chunked=True) == (200, {"size": 900})  # replayed intact
    assert _call(app, "POST", b"x" * 1500, js, chunked=True)[0] == 413
    status, body = _call(app, "POST", b"a=1", {"content-type": "application/x-www-form-urlencoded"})
    assert status == 415 and "application/json" in body["error"]
    assert _call(app, "POST", b"{}", {"content-type": "application/problem+json"})[0] == 200
    assert _call(app, "GET", None, {})[0] == 200  # probes and GETs pass untouched


def test_service_config_carries_limits_and_experiment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlops_provider.runtime.serving.schema import ServiceLimits, load_service_config

    p = tmp_path / "bento_config.json"
    p.write_text(
        json.dumps(
            {
                "model_name": "m",
                "model_tag": "m:v1",
                "model_version": "1",
                "feature_repo": "/r",
                "feature_service": "fs",
                "categorical": ["origin"],
                "numeric": ["temp"],
                "inference_log_dir": "s3://bucket/log",
                "limits": {"max_batch_rows": 4},
                "experiment": {
                    "mode": "split",
                    "share": 0.1,
                    "challenger_tag": "m:v2",
                    "challenger_version": "2",
                },
            }
        )
    )
    cfg = load_service_config(p)
    assert cfg.limits.max_batch_rows == 4 and cfg.limits.max_body_bytes == ServiceLimits().max_body_bytes
    assert (
        cfg.experiment is not None
        and cfg.experiment.share == 0.1
        and cfg.inference_log_dir == "s3://bucket/log"
    )
    with pytest.raises(ValidationError):
        ServiceLimits(max_batch_rows=0)
