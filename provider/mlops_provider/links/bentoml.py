"""Extra link to the BentoML serving endpoint of a deploy task (light module)."""

from __future__ import annotations

from mlops_provider.links.base import XComUrlLink

BENTO_ENDPOINT_XCOM_KEY = "bento_endpoint_url"


class BentoEndpointLink(XComUrlLink):
    """"BentoML endpoint" button: the URL the deploy task pushed to XCom once the deployment was ready."""

    name = "BentoML endpoint"
    key = BENTO_ENDPOINT_XCOM_KEY
