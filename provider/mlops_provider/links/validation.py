"""Extra link to the data validation report of a landing (light module)."""

from __future__ import annotations

from mlops_provider.links.drift import DriftReportLink


class ValidationReportLink(DriftReportLink):
    """"Validation report" button: every contract rule with counts and example rows (HTML, per run)."""

    name = "Validation report"
    key = "validation_report_url"
    kind = "validation"
