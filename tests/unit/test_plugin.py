"""The UI plugin registers its app and a short nav entry, and nothing of it answers without Airflow's auth.

(Logged-in behaviour of every route: tests/integration/test_ui_plugin.py; in a real browser:
tests/browser/test_ui_browser.py.)
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]


def _plugin():
    spec = importlib.util.spec_from_file_location("mlops_plugin", REPO / "plugins" / "mlops_plugin.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_plugin_registers_app_and_a_short_nav_label() -> None:
    mod = _plugin()
    (app,) = mod.MlopsPlugin.fastapi_apps
    assert app["url_prefix"] == "/mlops"
    (view,) = mod.MlopsPlugin.external_views
    assert view["href"] == "/mlops/" and view["destination"] == "nav"
    assert view["name"] == "MLOps"  # "MLOps pipelines" was cut to "MLOps pi..." in the nav bar


def test_every_route_is_401_without_credentials() -> None:
    app = _plugin().app
    client = TestClient(app)
    paths = [r.path for r in app.routes if getattr(r, "methods", None) and "GET" in r.methods]
    assert "/" in paths and "/docs" in paths and "/openapi.json" in paths
    for path in paths:
        concrete = path.replace("{model}", "flights_delay").replace("{version}", "1").replace(
            "{kind}", "drift").replace("{name}", "x.html").replace("{run_id}", "abc")
        r = client.get(concrete)
        assert r.status_code == 401, (path, r.status_code)
    # FastAPI's own CDN-backed docs are off
    assert app.docs_url is None and app.redoc_url is None and app.openapi_url is None
