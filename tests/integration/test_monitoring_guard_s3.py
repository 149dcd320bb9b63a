"""The retrain guard ledger on S3 (a real moto server on loopback): conditional writes, retried on conflict."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from conftest_features_s3 import bucket, moto_s3, s3_store  # noqa: F401 - fixtures

from mlops_provider.runtime.monitoring import retrain_guard as rg

T0 = datetime(2026, 7, 1, tzinfo=UTC)


def _decide(key: str):
    def fn(data: dict) -> rg.Decision:
        d = rg.decide(
            key=key,
            now=T0,
            triggered=[("drift", {})],
            manual=False,
            champion="1",
            retrain_on=["drift"],
            settings=rg.GuardSettings(min_new_labels=0),
            ledger=data,
        )
        rg.record(data, d)
        return d

    return fn


def test_ledger_on_s3_survives_a_concurrent_writer(moto_s3, bucket, s3_store) -> None:  # noqa: F811 - fixtures
    url = f"s3://{bucket}/state/retrain_guard/m.json"
    ledger = rg.GuardLedger(url, "m", store=s3_store)
    assert ledger.update(_decide("dag/r1")).action == "train"
    assert set(ledger.read()["decisions"]) == {"dag/r1"}

    calls = {"n": 0}

    def racing(data: dict) -> rg.Decision:
        calls["n"] += 1
        if calls["n"] == 1:  # another worker writes between our read and our conditional put
            other = rg.GuardLedger(url, "m", store=s3_store)
            other.update(_decide("dag/other"))
        return _decide("dag/r2")(data)

    decision = ledger.update(racing)
    assert calls["n"] == 2 and decision.key == "dag/r2"
    saved = json.loads(
        moto_s3.client.get_object(Bucket=bucket, Key="state/retrain_guard/m.json")["Body"].read()
    )
    assert set(saved["decisions"]) == {"dag/r1", "dag/other", "dag/r2"}  # nobody's decision was lost

    with_ask = rg.GuardLedger(url, "m", store=s3_store)
    with_ask.update(
        lambda data: rg.record(data, rg.Decision("ask", "breaker", "breaker", T0.isoformat(), "dag/r3"))
    )
    assert with_ask.record_approval("dag/r3", True, by="ops")["approval"] == "approved"
    assert with_ask.read()["decisions"]["dag/r3"]["counts_as_retrain"] is True
