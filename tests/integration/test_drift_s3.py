"""Drift reports published to object storage (a real moto S3 server on loopback) and the s3 extra link."""

from __future__ import annotations

import json

import pytest
from conftest_features_s3 import bucket, moto_s3  # noqa: F401 - fixtures

from mlops_provider.links.drift import DriftReportLink
from mlops_provider.runtime.monitoring.drift import publish_reports, write_report

pytestmark = pytest.mark.integration


def test_reports_are_uploaded_under_the_s3_prefix_idempotently(tmp_path, moto_s3, bucket):  # noqa: F811
    local = write_report(
        None, tmp_path, "drift__m__v1__a__b", summary={"status": "no_traffic", "drift": False}
    )
    (tmp_path / "drift__m__v1__a__b.html").write_text("<html>report</html>")
    local["html"] = str(tmp_path / "drift__m__v1__a__b.html")
    prefix = f"s3://{bucket}/reports/m/drift"
    first = publish_reports(local, prefix)
    again = publish_reports(local, prefix)  # same window -> same keys, nothing new
    assert (
        first
        == again
        == {
            "html": f"{prefix}/drift__m__v1__a__b.html",
            "json": f"{prefix}/drift__m__v1__a__b.json",
        }
    )
    assert moto_s3.keys(bucket) == [
        "reports/m/drift/drift__m__v1__a__b.html",
        "reports/m/drift/drift__m__v1__a__b.json",
    ]
    body = moto_s3.client.get_object(Bucket=bucket, Key="reports/m/drift/drift__m__v1__a__b.json")[
        "Body"
    ].read()
    assert json.loads(body)["summary"]["status"] == "no_traffic"
    assert DriftReportLink.url_for(first["html"]) == first["html"]
    # a local report dir is left as it is (no upload)
    assert publish_reports(local, str(tmp_path)) == local
