"""`make land` feeds the landing zone with the example's monthly files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlops_provider.examples.land import main, parse_months

REPO = Path(__file__).resolve().parents[2]


def test_parse_months() -> None:
    assert parse_months("1-6") == [1, 2, 3, 4, 5, 6]
    assert parse_months("7,8") == [7, 8]
    assert parse_months("1-2, 5") == [1, 2, 5]
    with pytest.raises(ValueError):
        parse_months("0-13")


def test_land_writes_monthly_files_into_the_landing_zone(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path))
    assert main(["--model", "flights_delay", "--months", "1", "--dags", str(REPO / "dags")]) == 0
    landing = tmp_path / "landing" / "flights_delay"
    assert sorted(p.name for p in landing.iterdir()) == [
        "flights_2013_01.parquet", "planes.parquet", "weather_2013_01.parquet"]
    assert "landed 3 file(s)" in capsys.readouterr().out
    assert main(["--model", "unknown", "--months", "1"]) == 2
