"""Landed files as the feature pipeline's transform receives them: normalised per the data contract
(runtime module).

A contract column may declare the zone of its naive timestamps (``tz: America/New_York``, see
:mod:`~mlops_provider.runtime.features.contracts`). :func:`~mlops_provider.runtime.features.contracts.read_landed`
applies it, but a transform is free to read its files with plain pandas; so
:class:`~mlops_provider.operators.feast.OfflinePartitionOperator` hands every transform files that are
already normalised (:func:`normalize_landed`): each column whose contract declares ``tz`` holds UTC instants,

* parquet: a ``timestamp[<unit>, tz=UTC]`` column (naive values localized to the declared zone - a repeated
  wall-clock hour is its first occurrence, a skipped one moves forward, as ``read_landed`` does - aware values
  converted); every other column keeps its type and values;
* CSV: the column's text rewritten as ISO 8601 with ``+00:00``; every other cell keeps its text.

Files without such a column (or of no contract table) are handed over unchanged, without a copy. The copies
keep their file names (contract tables are matched by name prefix) and live in a temporary directory for the
duration of the transform.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_provider.runtime.features.contracts import file_format, table_for_file

log = logging.getLogger(__name__)


def declared_zones(contract: Mapping[str, Any] | None, path: str | os.PathLike[str]) -> dict[str, str]:
    """``{column: zone}`` of the contract table ``path`` belongs to (columns that declare ``tz``)."""
    tables = dict((contract or {}).get("tables") or {})
    table = table_for_file(path, list(tables))
    if table is None:
        return {}
    columns = dict((tables[table] or {}).get("columns") or {})
    return {c: str(r["tz"]) for c, r in columns.items() if isinstance(r, Mapping) and r.get("tz")}


def to_utc(values: pd.Series, tz: str) -> pd.Series:
    """Datetimes in UTC: naive values are wall-clock times in ``tz``; aware ones are converted."""
    if getattr(values.dtype, "tz", None) is not None:
        return values.dt.tz_convert("UTC")
    first = np.ones(len(values), dtype=bool)  # a repeated hour (DST ends) is its first occurrence
    return values.dt.tz_localize(tz, ambiguous=first, nonexistent="shift_forward").dt.tz_convert("UTC")


def _parquet(src: Path, dest: Path, zones: Mapping[str, str]) -> bool:
    table = pq.read_table(src)
    changed = False
    for col, tz in zones.items():
        if col not in table.column_names:
            continue
        i = table.column_names.index(col)
        typ = table.schema.field(col).type
        if not pa.types.is_timestamp(typ) or typ.tz == "UTC":
            continue  # not a timestamp (the dtype rule reports it) or already UTC
        utc = to_utc(table.column(col).to_pandas(), tz)
        table = table.set_column(i, pa.field(col, pa.timestamp(typ.unit, tz="UTC")),
                                 pa.array(utc, type=pa.timestamp(typ.unit, tz="UTC"), from_pandas=True))
        changed = True
    if changed:
        pq.write_table(table, dest)
    return changed


def _iso_utc(text: pd.Series, tz: str) -> pd.Series:
    """ISO 8601 ``+00:00`` text of the parseable values of a text column (the others keep their text)."""
    present = text.str.strip() != ""
    out = text.copy()
    if not present.any():
        return out
    try:
        parsed = pd.to_datetime(text[present], format="ISO8601")
        utc = to_utc(parsed, tz) if getattr(parsed.dtype, "tz", None) is None else parsed.dt.tz_convert("UTC")
    except (ValueError, TypeError):  # offsets in some values only: one by one
        def one(v: str) -> str:
            try:
                t = pd.Timestamp(v)
            except (ValueError, TypeError):
                return v
            return to_utc(pd.Series([t]), tz).iloc[0].isoformat()

        out[present] = text[present].map(one)
        return out
    out[present] = [t.isoformat() if not pd.isna(t) else v for t, v in zip(utc, text[present], strict=True)]
    return out


def _csv(src: Path, dest: Path, zones: Mapping[str, str]) -> bool:
    df = pd.read_csv(src, dtype=str, keep_default_na=False)  # every cell as its text
    cols = [c for c in zones if c in df.columns]
    if not cols:
        return False
    for col in cols:
        df[col] = _iso_utc(df[col], zones[col])
    df.to_csv(dest, index=False)
    return True


def normalize_landed(files: list[str], contract: Mapping[str, Any] | None, dest_dir: str | os.PathLike[str]
                     ) -> list[str]:
    """The local landed ``files`` normalised per ``contract`` (``{"tables": {table: spec}}``): see the module
    docstring. Returns the paths to hand to the transform, in order (unchanged files keep their path)."""
    out: list[str] = []
    for i, path in enumerate(files):
        zones = declared_zones(contract, path)
        src = Path(path)
        if not zones or not src.is_file():
            out.append(path)
            continue
        dest = Path(dest_dir) / str(i) / src.name  # one folder per file: two landings may share a name
        dest.parent.mkdir(parents=True, exist_ok=True)
        fmt = file_format(src)
        changed = _parquet(src, dest, zones) if fmt == "parquet" else _csv(src, dest, zones)
        if changed:
            log.info("%s: column(s) %s converted to UTC from their declared zones for the transform", src.name,
                     sorted(zones))
        out.append(str(dest) if changed else path)
    return out


__all__ = ["declared_zones", "normalize_landed", "to_utc"]
