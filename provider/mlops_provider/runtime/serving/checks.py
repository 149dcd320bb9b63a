"""Checks of a serving endpoint over HTTP: smoke test and live-version verification (runtime module).

- :func:`smoke_test` POSTs requests to ``<url>/predict`` with header ``X-Mlops-Traffic: smoke`` (the
  inference log marks them, monitoring leaves them out) and checks every answer: a binary probability in
  [0, 1] with a 0/1 prediction, multiclass probabilities with a predicted class, or a finite regression
  prediction; requests without an id get ``request_id`` ``smoke-<uuid>``;
- :func:`live_version` / :func:`verify_live_version` ask ``POST <url>/health`` what is serving and
  raise :class:`~mlops_provider.exceptions.LiveVersionMismatch` when it is not what was deployed (a
  silent rollback, a concurrent deploy);
- :func:`check_endpoint` does both (the smoke-test task).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any

from mlops_provider.exceptions import DeploymentError
from mlops_provider.runtime.serving.request_schema import TRAFFIC_HEADER

#: request_id prefix of smoke-test traffic in the inference log.
SMOKE_ID_PREFIX = "smoke-"


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def answer_problem(item: Any) -> str | None:
    """Why one ``/predict`` answer item is not a valid prediction (None: it is), whatever the task."""
    if not isinstance(item, dict) or not isinstance(item.get("request_id"), str):
        return "not a prediction object with a request_id"
    if "probability" in item:  # binary
        p = item["probability"]
        if not _finite(p) or not 0.0 <= p <= 1.0:
            return f"probability {p!r} is not a number in [0, 1]"
        if item.get("prediction") not in (0, 1) or isinstance(item.get("prediction"), bool):
            return f"prediction {item.get('prediction')!r} is not 0 or 1"
        return None
    if "probabilities" in item:  # multiclass
        probs = item["probabilities"]
        if not isinstance(probs, dict) or not probs or not all(_finite(v) and 0 <= v <= 1 for v in probs.values()):
            return f"probabilities {probs!r} are not numbers in [0, 1]"
        if str(item.get("prediction")) not in probs:
            return f"prediction {item.get('prediction')!r} is not one of the classes {sorted(probs)}"
        return None
    if not _finite(item.get("prediction")):  # regression
        return f"prediction {item.get('prediction')!r} is not a finite number"
    return None


def smoke_test(
    url: str,
    request: Mapping[str, Any] | list[Mapping[str, Any]],
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """POST ``request`` to ``<url>/predict`` over HTTP and check the answer; returns the first prediction.

    Sent with ``X-Mlops-Traffic: smoke``; requests without ``request_id`` get ``smoke-<uuid>``.
    Raises DeploymentError on a non-2xx status or an invalid answer (:func:`answer_problem`).
    """
    import httpx

    reqs = [dict(r) for r in request] if isinstance(request, list) else [dict(request)]
    for r in reqs:  # mark smoke traffic so drift monitoring can leave it out
        r.setdefault("request_id", f"{SMOKE_ID_PREFIX}{uuid.uuid4().hex}")
    endpoint = f"{url.rstrip('/')}/predict"
    try:
        resp = httpx.post(endpoint, json={"requests": reqs}, timeout=timeout,
                          headers={TRAFFIC_HEADER: "smoke", **dict(headers or {})})
    except httpx.HTTPError as e:
        raise DeploymentError(f"Smoke test could not reach {endpoint}: {e}") from e
    if not 200 <= resp.status_code < 300:
        raise DeploymentError(f"Smoke test got HTTP {resp.status_code} from {endpoint}: {resp.text[:500]}")
    try:
        body = resp.json()
    except ValueError as e:
        raise DeploymentError(f"Smoke test got non-JSON from {endpoint}: {resp.text[:500]}") from e
    if not isinstance(body, list) or len(body) != len(reqs):
        raise DeploymentError(f"Smoke test expected {len(reqs)} predictions from {endpoint}, got: {str(body)[:500]}")
    for item in body:
        problem = answer_problem(item)
        if problem:
            raise DeploymentError(f"Smoke test got an invalid prediction from {endpoint}: {problem}: {item!r}")
    return dict(body[0])


def live_version(url: str, headers: Mapping[str, str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
    """What the endpoint says it serves: the JSON of ``POST <url>/health`` (``bento_tag``, ``model_version``)."""
    import httpx

    endpoint = f"{url.rstrip('/')}/health"
    try:
        resp = httpx.post(endpoint, json={}, timeout=timeout, headers=dict(headers or {}))
    except httpx.HTTPError as e:
        raise DeploymentError(f"Cannot ask {endpoint} which version it serves: {e}") from e
    if resp.status_code != 200:
        raise DeploymentError(f"{endpoint} answered HTTP {resp.status_code}: {resp.text[:300]}")
    try:
        body = resp.json()
    except ValueError as e:
        raise DeploymentError(f"{endpoint} did not answer JSON: {resp.text[:300]}") from e
    if not isinstance(body, dict):
        raise DeploymentError(f"{endpoint} answered {str(body)[:300]}, expected an object")
    return body


def verify_live_version(
    url: str,
    *,
    bento_tag: str | None = None,
    model_version: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """Check the endpoint reports the deployed ``bento_tag`` / ``model_version``; returns what it reports.

    Raises :class:`~mlops_provider.exceptions.LiveVersionMismatch` when it serves something else (a
    silent rollback: the platform kept or restored the old version, another deploy won a race, ...).
    """
    from mlops_provider.exceptions import LiveVersionMismatch

    live = live_version(url, headers=headers, timeout=timeout)
    wrong = []
    if bento_tag and str(live.get("bento_tag")) != bento_tag:
        wrong.append(f"bento_tag {live.get('bento_tag')!r} != deployed {bento_tag!r}")
    if model_version and str(live.get("model_version")) != str(model_version):
        wrong.append(f"model_version {live.get('model_version')!r} != deployed {model_version!r}")
    if wrong:
        raise LiveVersionMismatch(
            f"{url} does not serve what was deployed ({'; '.join(wrong)}): a silent rollback or a concurrent "
            "deploy. Check the deployment's events/logs and re-run the deploy task.",
            live=live,
        )
    return live


def check_endpoint(
    url: str,
    request: Mapping[str, Any] | list[Mapping[str, Any]],
    *,
    timeout: float = 30.0,
    headers: Mapping[str, str] | None = None,
    expected_bento_tag: str | None = None,
) -> dict[str, Any]:
    """:func:`smoke_test` ``url``, then (with ``expected_bento_tag``) :func:`verify_live_version`.

    Returns ``{"prediction": <first prediction>, "live": <what /health reports> | None}``.
    """
    prediction = smoke_test(url, request, timeout=timeout, headers=headers)
    live = verify_live_version(url, bento_tag=expected_bento_tag, headers=headers) if expected_bento_tag else None
    return {"prediction": prediction, "live": live}


def endpoint_readiness(
    url: str,
    *,
    bento_tag: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> dict[str, Any]:
    """One readiness probe of a remote endpoint: ``{"ready", "reason", "live", "mismatch"}``.

    Ready when ``GET <url>/readyz`` answers 200 and (with ``bento_tag``) ``POST <url>/health`` reports
    that bento. ``mismatch`` is True when the endpoint is up but serves another bento (``reason`` says
    which); ``live`` is what ``/health`` reported (None before it answers). Never raises for an
    endpoint that is down or not ready yet (the deploy operator's deferrable trigger polls this).
    """
    import httpx

    from mlops_provider.exceptions import LiveVersionMismatch

    base = url.rstrip("/")
    out: dict[str, Any] = {"ready": False, "reason": "", "live": None, "mismatch": False}
    try:
        resp = httpx.get(f"{base}/readyz", timeout=timeout, headers=dict(headers or {}))
    except httpx.HTTPError as e:
        out["reason"] = f"{base}/readyz unreachable: {type(e).__name__}: {e}"
        return out
    if resp.status_code != 200:
        out["reason"] = f"{base}/readyz answered HTTP {resp.status_code}"
        return out
    if not bento_tag:
        out["ready"], out["reason"] = True, f"{base}/readyz answered 200"
        return out
    try:
        out["live"] = verify_live_version(base, bento_tag=bento_tag, headers=headers, timeout=timeout)
    except LiveVersionMismatch as e:
        out["live"], out["mismatch"], out["reason"] = e.live, True, str(e)
        return out
    except DeploymentError as e:
        out["reason"] = str(e)
        return out
    out["ready"], out["reason"] = True, f"{base} is ready and serves {bento_tag}"
    return out
