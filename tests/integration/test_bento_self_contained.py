"""A bento is self-contained: copied to a fresh BentoML home on "another machine" (the host's feature repo
deleted, no MLOPS_/MLFLOW_/BENTOML_ variable of the host), it serves predictions with features from the
production backends only (SQL registry on PostgreSQL, Redis online store), whose addresses come from the
environment through Feast's ``${VAR}`` substitution in the bundled YAML."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from conftest_features import port_open, purge_sql_registry
from conftest_serving import (  # noqa: F401
    FEATURE_SERVICE,
    FEATURES,
    GOOD_REQUEST,
    MODEL_NAME,
    build_feature_repo,
    serving_world_fixture,
)

pytestmark = pytest.mark.integration

REGISTRY_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
REDIS = "127.0.0.1:6379"
SERVICES_UP = port_open(5432) and port_open(6379)


@pytest.mark.skipif(not SERVICES_UP and not os.environ.get("CI"), reason="loopback PostgreSQL/Redis not running")
def test_a_copied_bento_serves_from_the_production_backends_only(serving_world, tmp_path, monkeypatch) -> None:
    import bentoml
    import httpx
    from feast import FeatureStore

    from mlops_provider.runtime.serving.package import bento_config, bentoml_home, package_bento
    from mlops_provider.runtime.serving.process import free_port, start_server, stop_server, wait_ready

    project = f"bento_portable_{os.getpid()}"
    backends = {"MLOPS_TEST_FEAST_REGISTRY": REGISTRY_URL, "MLOPS_TEST_FEAST_REDIS": REDIS}
    for k, v in backends.items():
        monkeypatch.setenv(k, v)
    yaml_file = "feature_store.production.yaml"
    repo = tmp_path / "host_repo"
    build_feature_repo(repo, fs_yaml_file=yaml_file, store_yaml=textwrap.dedent(f"""\
        project: {project}
        provider: local
        registry:
          registry_type: sql
          path: ${{MLOPS_TEST_FEAST_REGISTRY}}
          cache_ttl_seconds: 60
        online_store:
          type: redis
          connection_string: ${{MLOPS_TEST_FEAST_REDIS}}
        entity_key_serialization_version: 3
        """))
    store = FeatureStore(repo_path=str(repo), fs_yaml_file=repo / yaml_file)
    try:
        built = package_bento(
            MODEL_NAME, "champion", serving_world.tracking_uri, repo, FEATURE_SERVICE, FEATURES,
            serving_world.inference_log, bentoml_home_dir=serving_world.bentoml_home, feature_store_yaml=yaml_file,
        )
        tag = built["bento_tag"]
        resolved = bento_config(tag, serving_world.bentoml_home)["feature_repo"]  # where it is in this store
        cfg = json.loads((Path(resolved).parent / "bento_config.json").read_text())  # as bundled
        assert cfg["feature_repo"] == "feature_repo" and cfg["feature_store_yaml"] == yaml_file
        assert (Path(resolved) / yaml_file).is_file()
        host_paths = [k for k, v in cfg.items() if k != "inference_log_dir"
                      and (str(serving_world.home) in json.dumps(v) or str(repo) in json.dumps(v))]
        assert host_paths == [], f"bento config names host paths: {host_paths}"

        archive = tmp_path / "bento.bento"
        with bentoml_home(serving_world.bentoml_home):
            bentoml.bentos.export_bento(tag, str(archive))
        elsewhere = tmp_path / "elsewhere"
        with bentoml_home(elsewhere / "bentoml"):
            bentoml.bentos.import_bento(str(archive))
        shutil.rmtree(repo)  # the host's repo (and its SQLite files) are gone

        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLOPS_", "MLFLOW_", "BENTOML_"))}
        env.update(backends, MLOPS_INFERENCE_LOG_DIR=str(elsewhere / "inference_log"),
                   MLOPS_HOME=str(elsewhere / "empty_home"))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_file = elsewhere / "serve.log"
        proc, offset = start_server(tag, "127.0.0.1", port, log_file, bentoml_home_dir=elsewhere / "bentoml",
                                    env=env, cwd=elsewhere)
        try:
            wait_ready(proc, url, log_file, offset, 180, tag, consequence="the copied bento did not start")
            resp = httpx.post(f"{url}/predict", json={"requests": [{**GOOD_REQUEST, "request_id": "copied-1"}]},
                              timeout=30)
            assert resp.status_code == 200, resp.text
            assert resp.json()[0]["request_id"] == "copied-1"
        finally:
            stop_server(proc.pid, timeout=20)
        from mlops_provider.runtime.serving.inference_log import read_inference_log

        logged = read_inference_log(str(elsewhere / "inference_log"))
        rows = logged[logged["request_id"] == "copied-1"].to_dict("records")
        assert len(rows) == 1, logged
        served = rows[0]
        assert served.get("missing_features") in (0, None) and not served.get("unknown_entities"), served
        online = store.get_online_features(
            features=store.get_feature_service(FEATURE_SERVICE),
            entity_rows=[{k: GOOD_REQUEST[k] for k in ("origin", "carrier", "tailnum")} | {
                k: GOOD_REQUEST[k] for k in ("sched_dep_hour", "weekday", "month", "distance")}],
        ).to_dict()
        numeric = [c for c in FEATURES["numeric"] if c in online and c in served]
        assert numeric and all(served[c] == pytest.approx(online[c][0]) for c in numeric), (served, online)
    finally:
        store.teardown()
        purge_sql_registry(REGISTRY_URL, project)
