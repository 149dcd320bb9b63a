"""Data contract gate on landed files (parse-safe: pandas is imported inside ``execute``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from mlops_provider.links.validation import ValidationReportLink
from mlops_provider.operator_notes import run_slug


class DataValidationOperator(BaseOperator):
    """Validate parquet / CSV file(s), local or ``s3://``, against a data contract; fail with every violated rule.

    The contract is the plain dict of the model YAML (``features.contract``), wrapped as
    ``{"tables": {table: spec}}``; its schema is documented in ``mlops_provider.runtime.features.contracts``.
    Each file is matched to a table by its name prefix (``<table>_*`` or ``<table>.<ext>``, as the contract names the tables).

    Always writes ``<report_dir>/<name>__<run id>.json`` and ``.html`` (one pair per run; the
    "Validation report" link opens the HTML). Returns
    ``{"passed": True, "files": [...], "warnings": [...], "report_json", "report_html"}`` (warnings, e.g.
    columns the contract does not declare, never fail the task); on a violation raises
    :class:`~mlops_provider.exceptions.DataValidationError` listing every rule with counts and up to 5
    example rows (``.failures`` carries them), so nothing downstream runs.

    :param data_paths: file(s) to check (list, a rendered list string, comma-separated paths or a
        directory of ``*.parquet``, ``s3://`` object URLs). Templated.
    :param aws_conn_id: connection used to download ``s3://`` files.
    """

    template_fields: Sequence[str] = ("data_paths", "report_dir", "name")
    operator_extra_links = (ValidationReportLink(),)
    ui_color = "#fcf3cf"

    def __init__(
        self,
        *,
        data_paths: list[str] | str,
        contract: dict[str, Any],
        report_dir: str,
        name: str = "landing",
        aws_conn_id: str | None = "aws_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self.data_paths = data_paths
        self.contract = contract
        self.report_dir = report_dir
        self.name = name

    def execute(self, context: Context) -> dict[str, Any]:
        from mlops_provider.operators import object_store
        from mlops_provider.operators.feast import as_path_list
        from mlops_provider.runtime.features.contracts import validate_files

        paths = as_path_list(self.data_paths)
        self.log.info("validating %d file(s) against the %r contract", len(paths), self.name)
        store = object_store(self.aws_conn_id)
        name = f"{self.name}__{run_slug(context)}"  # kept per run: the next landing writes its own
        ValidationReportLink.persist(context, f"{self.report_dir}/{name}.html")  # written on pass and fail
        report = validate_files(paths, self.contract, self.report_dir, name=name, store=store)
        for w in report["warnings"]:
            self.log.warning("%s: %s", w["file"], w["message"])
        self.log.info("all rules hold; report %s", report["report_html"])
        return {
            "passed": report["passed"],
            "files": report["files"],
            "warnings": report["warnings"],
            "report_json": report["report_json"],
            "report_html": report["report_html"],
        }
