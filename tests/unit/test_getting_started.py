"""Getting started under `make airflow-ui`: DAGs unpaused on first start, descriptions, connection forms."""

from __future__ import annotations

from pathlib import Path

from mlops_provider.connection_forms import CONNECTION_TYPES
from mlops_provider.embedded import EmbeddedAirflow
from mlops_provider.factory import dags_from_directory

REPO = Path(__file__).resolve().parents[2]


def test_airflow_ui_unpauses_pipeline_dags_on_first_start(tmp_path) -> None:
    # `make airflow-ui` passes --unpause, which creates every DAG unpaused
    from mlops_provider.embedded import main  # noqa: F401 - the CLI the Makefile runs

    af = EmbeddedAirflow(home=tmp_path, dags_folder=REPO / "dags", paused_at_creation=False)
    assert af.process_env()["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    makefile = (REPO / "Makefile").read_text()
    assert "--unpause" in makefile.split("airflow-ui:", 1)[1].split("\n\n", 1)[0]


def test_every_dag_has_a_description() -> None:
    dags = dags_from_directory(REPO / "dags")
    assert dags
    for dag_id, dag in dags.items():
        model = dag_id.split("__")[0]
        assert dag.description and dag.description.startswith(model), dag_id
        assert "`" not in dag.description


def test_extra_fields_show_their_example_and_passwords_none() -> None:
    for conn_type, spec in CONNECTION_TYPES.items():
        placeholders = spec["ui-field-behaviour"]["placeholders"]
        for name, field in spec["conn-fields"].items():
            if field["schema"].get("format") == "password":
                assert "examples" not in field["schema"], (conn_type, name)
            elif name in placeholders:
                assert field["schema"]["examples"] == [placeholders[name]], (conn_type, name)
