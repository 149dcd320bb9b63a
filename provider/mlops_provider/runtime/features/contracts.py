"""Validate landed parquet files against a data contract (runtime module: pandas allowed).

Contract schema (a plain dict, as read from the model YAML's ``features.contract``; ``config.py``
mirrors it as pydantic models)::

    {
      "tables": {
        "<table>": {                      # a table of the contract (matched by file-name prefix)
          "min_rows": int,                # at least this many rows            (default 1)
          "columns": {
            "<col>": {
              "dtype": "int" | "float" | "str" | "datetime" | "bool",   # optional
              "nullable": bool,           # default true; false -> no nulls allowed
              "min": number,              # optional inclusive lower bound (numeric / datetime)
              "max": number,              # optional inclusive upper bound
              "allowed": [values, ...],   # optional closed set of values (nulls are judged by nullable)
              "tz": "America/New_York",   # datetime: the zone of naive timestamps (converted to UTC on read)
              "allow_non_finite": bool,   # numeric: accept +-inf (default false: rule non_finite)
            },
          },
          "unique": ["col", ...],         # these columns together form a key (no duplicate rows)
          "no_future": "<datetime col>",  # no value later than now (UTC)
        },
      },
    }

Besides the declared rules, every file is checked for: ``empty_file`` (0 bytes), ``readable`` (the
parquet / CSV parses), ``all_null`` (a column with a declared ``dtype`` that is null in every row of
a non-empty file -- a broken feed; opt out per column with ``allow_all_null: true``), ``timezone`` (a
``datetime`` column must hold time-zone aware timestamps, or declare the zone of its naive ones with
``tz``: a naive timestamp is a wall-clock time in an unknown zone, silently read as UTC it shifts every
event by hours) and ``non_finite`` (``+-inf`` in a numeric column, with or without ``min`` / ``max``;
opt in with ``allow_non_finite: true``; ``NaN`` in a ``nullable: false`` column is ``not_null``).

:func:`read_landed` applies the zones: a column that declares ``tz`` comes back in UTC (naive values
localized to the zone; a skipped hour moves forward, a repeated one is its first occurrence), aware
columns are converted to UTC; with ``strict=True`` a naive ``datetime`` column without ``tz`` raises
:class:`DataValidationError` naming the column and the fix. Transforms read landed files through it,
after the validation task passed, so nothing reaches the lake in local or unknown time. Columns that
the contract does not declare (in ``columns``, ``unique`` or ``no_future``) are *warnings*
(``unknown_column``): logged and listed under ``warnings`` in the report, never a failure.

Formats: ``*.parquet`` and ``*.csv`` (read with the contract's dtypes: ``str`` columns as strings,
``datetime`` columns parsed as UTC, the rest inferred). Paths may be ``s3://bucket/key`` URLs: the
object is downloaded to a temporary directory first (through ``store``, an
:class:`~mlops_provider.runtime.io.objstore.ObjectStore`).

A file is matched to the table whose name is the longest prefix of the file name
(``orders_2024_01.parquet`` -> ``orders``; ``stores.parquet`` -> ``stores``). Every rule is
checked (no early exit); each violation is reported as
``{"file", "table", "rule", "column", "message", "count", "examples"}`` with at most 5 example rows.
"""

from __future__ import annotations

import html
import json
import logging
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops_provider.exceptions import DataValidationError
from mlops_provider.runtime.io import objstore
from mlops_provider.runtime.io.objstore import ObjectStore

log = logging.getLogger(__name__)

MAX_EXAMPLES = 5
DTYPES = ("int", "float", "str", "datetime", "bool")


def table_for_file(path: str | os.PathLike[str], tables: list[str]) -> str | None:
    """The contract table a file belongs to: the longest table name that prefixes the file name."""
    name = Path(path).name
    matches = [t for t in tables if name.startswith(t)]
    return max(matches, key=len) if matches else None


SUPPORTED_FORMATS = (".parquet", ".csv")


def file_format(path: str | os.PathLike[str]) -> str:
    """``parquet`` or ``csv`` from the file name; anything else is a DataValidationError."""
    name = str(path).lower()
    for suffix in SUPPORTED_FORMATS:
        if name.endswith(suffix):
            return suffix[1:]
    raise DataValidationError(
        f"unsupported format: {path} is neither parquet nor CSV (supported: {SUPPORTED_FORMATS}); "
        "land the data as .parquet or .csv."
    )


def _naive_datetime(series: pd.Series) -> bool:
    return bool(pd.api.types.is_datetime64_any_dtype(series) and getattr(series.dtype, "tz", None) is None)


def normalize_timezones(df: pd.DataFrame, columns: dict[str, Any] | None, *, strict: bool = False,
                        where: str = "") -> pd.DataFrame:
    """Datetime columns in UTC: a column that declares ``tz`` has its naive values localized to that zone;
    aware columns are converted. ``strict``: a naive ``datetime`` column without ``tz`` raises
    :class:`DataValidationError` (otherwise it is left naive for the ``timezone`` rule to report)."""
    for c, r in (columns or {}).items():
        r = r or {}
        if c not in df.columns or not pd.api.types.is_datetime64_any_dtype(df[c]):
            continue
        tz = r.get("tz")
        if _naive_datetime(df[c]):
            if tz:
                try:
                    # a repeated hour (DST ends) is read as its first occurrence, a skipped one (DST starts)
                    # moves forward: every wall-clock time gets one instant
                    first = np.ones(len(df), dtype=bool)
                    df[c] = df[c].dt.tz_localize(tz, ambiguous=first, nonexistent="shift_forward").dt.tz_convert("UTC")
                except Exception as e:  # an unknown zone name: the timezone rule reports it
                    if strict:
                        raise DataValidationError(f"column {c!r}{where}: time zone {tz!r} is unknown ({e}); "
                                                  "use an IANA name such as America/New_York") from e
            elif strict and r.get("dtype") == "datetime":
                raise DataValidationError(_naive_message(c, where))
        else:
            df[c] = df[c].dt.tz_convert("UTC")
    return df


def _naive_message(column: str, where: str = "") -> str:
    return (f"column {column!r}{where} holds naive timestamps (no time zone): they would be read as UTC. Land "
            "time-zone aware timestamps (e.g. ISO 8601 with an offset, or a parquet timestamp with tz=UTC), or "
            f"declare their zone in the contract: columns: {{{column}: {{dtype: datetime, tz: America/New_York}}}}")


def transform_result(stamps: list[Any], months: Any, rows: dict[str, int]) -> dict[str, Any]:
    """What a transform returns (the transform contract): ``{"window_start", "window_end", "months", "rows"}``.

    ``stamps``: the ``event_timestamp`` series of every partition written; the window is [first event, last
    event + 1 s) so that materializing it includes the last event (None, None when nothing was written).
    """
    import pandas as pd

    ts = pd.concat(stamps, ignore_index=True) if stamps else pd.Series(dtype="datetime64[ns, UTC]")
    return {
        "window_start": ts.min().isoformat() if len(ts) else None,
        "window_end": (ts.max() + pd.Timedelta(seconds=1)).isoformat() if len(ts) else None,
        "months": sorted(months),
        "rows": dict(sorted(rows.items())),
    }


def read_landed(path: str | os.PathLike[str], columns: dict[str, Any] | None = None, *,
                strict: bool = False) -> pd.DataFrame:
    """Read a landed parquet / CSV file. CSV columns follow the contract's dtypes (``columns``); datetime
    columns come back in UTC when aware or when the contract declares their ``tz``
    (:func:`normalize_timezones`; ``strict``: a naive one without ``tz`` raises).

    Raises :class:`DataValidationError` for an unsupported extension; parser errors propagate.
    """
    fmt = file_format(path)
    specs = {c: (r or {}) for c, r in (columns or {}).items()}
    where = f" of {Path(path).name}"
    if fmt == "parquet":
        return normalize_timezones(pd.read_parquet(path), specs, strict=strict, where=where)
    str_cols = {c: "string" for c, r in specs.items() if r.get("dtype") == "str"}
    df = pd.read_csv(path, dtype=str_cols or None, keep_default_na=True)
    for c in str_cols:
        if c in df.columns:  # back to plain object strings (None for missing), like parquet gives
            df[c] = df[c].astype(object).where(df[c].notna(), None)
    for c, r in specs.items():
        if r.get("dtype") == "datetime" and c in df.columns:
            try:  # offsets in the text are kept (aware); text without one stays naive: never assumed UTC
                df[c] = pd.to_datetime(df[c], format="ISO8601")
            except (ValueError, TypeError):
                try:  # mixed offsets
                    df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
                except (ValueError, TypeError):
                    pass  # left as text: the dtype rule reports it with examples
    return normalize_timezones(df, specs, strict=strict, where=where)


def _examples(df: pd.DataFrame, mask: pd.Series, cols: list[str] | None = None) -> list[dict[str, Any]]:
    sub = df.loc[mask]
    if cols:
        sub = sub[[c for c in cols if c in sub.columns]]
    rows = sub.head(MAX_EXAMPLES)
    return json.loads(rows.to_json(orient="records", date_format="iso", default_handler=str))


def _dtype_ok(series: pd.Series, dtype: str) -> bool:
    t = pd.api.types
    if dtype == "int":
        # integers, or floats that hold only whole numbers (a nullable int column read back as float)
        if t.is_integer_dtype(series) and not t.is_bool_dtype(series):
            return True
        return bool(t.is_float_dtype(series) and (series.dropna() % 1 == 0).all())
    if dtype == "float":
        return bool(t.is_float_dtype(series) or (t.is_integer_dtype(series) and not t.is_bool_dtype(series)))
    if dtype == "str":
        if t.is_object_dtype(series) or t.is_string_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype):
            return bool(series.dropna().map(lambda v: isinstance(v, str)).all())
        return False
    if dtype == "datetime":
        return bool(t.is_datetime64_any_dtype(series))
    if dtype == "bool":
        return bool(t.is_bool_dtype(series))
    return False


def _bound(value: Any, series: pd.Series) -> Any:
    if pd.api.types.is_datetime64_any_dtype(series):
        ts = pd.Timestamp(value)
        tz = getattr(series.dtype, "tz", None)
        if tz is not None and ts.tzinfo is None:
            ts = ts.tz_localize("UTC")
        return ts
    return value


def unknown_columns(df: pd.DataFrame, spec: dict[str, Any]) -> list[str]:
    """Columns of ``df`` the table contract does not declare (a warning, not a failure)."""
    known = set(spec.get("columns") or {}) | set(spec.get("unique") or [])
    if spec.get("no_future"):
        known.add(spec["no_future"])
    return [str(c) for c in df.columns if c not in known]


def validate_frame(
    df: pd.DataFrame, spec: dict[str, Any], *, table: str, file: str, now: datetime | None = None
) -> list[dict[str, Any]]:
    """Every violation of ``spec`` (one table's contract) by ``df``; empty when the frame conforms."""
    failures: list[dict[str, Any]] = []

    def fail(rule: str, column: str | None, message: str, count: int, examples: list[dict[str, Any]]) -> None:
        failures.append(
            {"file": file, "table": table, "rule": rule, "column": column, "message": message,
             "count": int(count), "examples": examples}
        )

    min_rows = int(spec.get("min_rows", 1) or 0)
    if len(df) < min_rows:
        fail("min_rows", None, f"{len(df)} rows, contract requires at least {min_rows}", min_rows - len(df), [])

    for col, rules in (spec.get("columns") or {}).items():
        rules = rules or {}
        if col not in df.columns:
            fail("missing_column", col, f"column {col!r} is missing (present: {list(df.columns)})", 1, [])
            continue
        s = df[col]
        dtype = rules.get("dtype")
        if dtype and len(df) and not rules.get("allow_all_null") and bool(s.isna().all()):
            fail("all_null", col, f"column {col!r} is null in all {len(df)} rows (a broken feed?)", len(df),
                 _examples(df, s.isna(), [col]))
            continue
        if dtype:
            if dtype not in DTYPES:
                fail("dtype", col, f"contract dtype {dtype!r} is unknown; use one of {DTYPES}", 1, [])
            elif not _dtype_ok(s, dtype):
                fail("dtype", col, f"column {col!r} has dtype {s.dtype}, contract says {dtype}", len(df),
                     _examples(df, s.notna(), [col]))
                continue  # range/allowed checks on a wrong dtype only add noise
        nulls = s.isna()
        if rules.get("nullable", True) is False and nulls.any():
            fail("not_null", col, f"column {col!r} has {int(nulls.sum())} null(s) (NaN included) but is not nullable",
                 int(nulls.sum()), _examples(df, nulls))
        present = ~nulls
        if pd.api.types.is_datetime64_any_dtype(s):
            tz = rules.get("tz")
            if tz:
                try:
                    pd.Timestamp("2000-01-01").tz_localize(tz)
                except Exception as e:
                    fail("timezone", col, f"column {col!r}: time zone {tz!r} is unknown ({e}); use an IANA name "
                                          "such as America/New_York", 1, [])
            elif _naive_datetime(s):
                fail("timezone", col, _naive_message(col), int(present.sum()), _examples(df, present, [col]))
        if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
            inf = present & pd.Series(np.isinf(s.to_numpy(dtype="float64", na_value=np.nan)), index=s.index)
            if inf.any() and not rules.get("allow_non_finite", False):
                fail("non_finite", col, f"{int(inf.sum())} infinite value(s) in {col!r}; numbers must be finite "
                                        "(set allow_non_finite: true on the column to accept them)",
                     int(inf.sum()), _examples(df, inf, [col]))
            present = present & ~inf  # never judged again by min / max: reported once, or accepted
        for key, op in (("min", "lt"), ("max", "gt")):
            if rules.get(key) is None:
                continue
            try:
                bound = _bound(rules[key], s)
                bad = present & (s < bound if op == "lt" else s > bound)
            except TypeError as e:
                fail(key, col, f"cannot compare column {col!r} ({s.dtype}) with {key}={rules[key]!r}: {e}", 1, [])
                continue
            if bad.any():
                word = "below min" if key == "min" else "above max"
                fail(key, col, f"{int(bad.sum())} value(s) of {col!r} {word} {rules[key]!r}", int(bad.sum()),
                     _examples(df, bad))
        if rules.get("allowed") is not None:
            allowed = list(rules["allowed"])
            bad = present & ~s.isin(allowed)
            if bad.any():
                seen = sorted(map(str, pd.unique(s[bad])))[:10]
                fail("allowed", col, f"{int(bad.sum())} value(s) of {col!r} outside {allowed}: {seen}",
                     int(bad.sum()), _examples(df, bad))

    unique = list(spec.get("unique") or [])
    if unique:
        absent = [c for c in unique if c not in df.columns]
        if absent:
            fail("unique", ",".join(unique), f"unique key column(s) {absent} missing", 1, [])
        else:
            dup = df.duplicated(unique, keep=False)
            if dup.any():
                n_extra = int(df.duplicated(unique, keep="first").sum())
                fail("unique", ",".join(unique), f"{n_extra} duplicate row(s) on key {unique}", n_extra,
                     _examples(df, dup, unique))

    nf = spec.get("no_future")
    if nf:
        if nf not in df.columns:
            fail("no_future", nf, f"no_future column {nf!r} is missing", 1, [])
        else:
            now_ts = pd.Timestamp(now or datetime.now(UTC))
            try:
                ts = pd.to_datetime(df[nf], utc=True)
            except (ValueError, TypeError) as e:
                fail("no_future", nf, f"column {nf!r} is not a timestamp: {e}", len(df), [])
            else:
                bad = ts > now_ts
                if bad.any():
                    fail("no_future", nf, f"{int(bad.sum())} timestamp(s) in {nf!r} after now ({now_ts.isoformat()})",
                         int(bad.sum()), _examples(df, bad))
    return failures


def _write_reports(report: dict[str, Any], report_dir: str, name: str, store: ObjectStore) -> tuple[str, str]:
    """``<report_dir>/<name>.{json,html}``: local files written atomically, or ``s3://`` objects."""
    jpath, hpath = objstore.join(report_dir, f"{name}.json"), objstore.join(report_dir, f"{name}.html")
    store.write_bytes(jpath, json.dumps(report, indent=2, default=str))
    rows = "".join(
        f"<tr><td>{html.escape(str(f['file']))}</td><td>{html.escape(str(f['table']))}</td>"
        f"<td>{html.escape(str(f['rule']))}</td><td>{html.escape(str(f['column']))}</td>"
        f"<td>{f['count']}</td><td>{html.escape(f['message'])}</td>"
        f"<td><pre>{html.escape(json.dumps(f['examples'], indent=1, default=str))}</pre></td></tr>"
        for f in report["failures"]
    )
    files = "".join(
        f"<li>{html.escape(f['file'])}: table {html.escape(str(f['table']))}, {f['rows']} rows</li>"
        for f in report["files"]
    )
    warns = "".join(
        f"<li>{html.escape(str(w['file']))}: {html.escape(str(w['rule']))}: {html.escape(w['message'])}</li>"
        for w in report.get("warnings") or []
    )
    status = "PASSED" if report["passed"] else "FAILED"
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Data validation {html.escape(name)}</title>"
        "<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px;vertical-align:top}</style></head><body>"
        f"<h1>Data validation '{html.escape(name)}': {status}</h1><p>checked at {report['checked_at']}</p>"
        f"<ul>{files}</ul>"
        + (f"<h2>Warnings</h2><ul>{warns}</ul>" if warns else "")
        + (
            "<table><tr><th>file</th><th>table</th><th>rule</th><th>column</th><th>count</th><th>message</th>"
            f"<th>examples</th></tr>{rows}</table>"
            if report["failures"]
            else "<p>All rules hold.</p>"
        )
        + "</body></html>"
    )
    store.write_bytes(hpath, page)
    return jpath, hpath


def validate_files(
    paths: list[str],
    contract: dict[str, Any],
    report_dir: str | os.PathLike[str],
    *,
    name: str = "landing",
    now: datetime | None = None,
    raise_on_failure: bool = True,
    store: ObjectStore | None = None,
) -> dict[str, Any]:
    """Validate landed parquet / CSV files (local or ``s3://``, read through ``store``) against ``contract``.

    Always writes ``<report_dir>/<name>.{json,html}`` (an ``s3://`` ``report_dir`` through ``store`` too). Returns the report ``{"name", "passed",
    "checked_at", "files": [...], "failures": [...], "warnings": [...], "report_json", "report_html"}``;
    raises :class:`DataValidationError` (carrying ``failures``) when a
    rule is violated and ``raise_on_failure``.
    """
    tables = dict((contract or {}).get("tables") or {})
    if not tables:
        raise DataValidationError("data contract has no 'tables'; add features.contract to the model YAML")
    files_info: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    warnings: list[dict[str, Any]] = []

    def file_failure(p: str, table: str | None, rule: str, message: str) -> None:
        failures.append({"file": p, "table": table, "rule": rule, "column": None, "count": 1,
                         "message": message, "examples": []})
        files_info.append({"file": p, "table": table, "rows": 0})

    with tempfile.TemporaryDirectory(prefix="mlops-validate-") as tmp:
        for i, p in enumerate(paths):
            table = table_for_file(p, list(tables))
            if table is None:
                file_failure(p, None, "unknown_table", f"file name matches no contract table {sorted(tables)}")
                continue
            try:
                file_format(p)
            except DataValidationError as e:
                file_failure(p, table, "unsupported_format", str(e))
                continue
            local = p
            if objstore.is_s3(p):
                try:
                    local = str((store or objstore.DEFAULT_STORE).download(
                        p, Path(tmp, str(i), objstore.basename(p))))
                except DataValidationError as e:
                    file_failure(p, table, "file_exists", str(e))
                    continue
            elif not os.path.isfile(p):
                file_failure(p, table, "file_exists", f"{p} does not exist (moved or deleted after landing?)")
                continue
            if os.path.getsize(local) == 0:
                file_failure(p, table, "empty_file", "the file is 0 bytes (an aborted upload?); land it again")
                continue
            spec = tables[table]
            try:
                df = read_landed(local, spec.get("columns"))
            except Exception as e:
                file_failure(p, table, "readable", f"cannot read {file_format(p)}: {type(e).__name__}: {e}")
                continue
            files_info.append({"file": p, "table": table, "rows": int(len(df))})
            failures.extend(validate_frame(df, spec, table=table, file=p, now=now))
            extra = unknown_columns(df, spec)
            if extra:
                warnings.append({"file": p, "table": table, "rule": "unknown_column", "column": ",".join(extra),
                                 "message": f"column(s) {extra} are not in the {table!r} contract (kept, not "
                                            "validated); declare them in features.contract to silence this",
                                 "count": len(extra), "examples": []})
    if not paths:
        failures.append({"file": None, "table": None, "rule": "no_files", "column": None, "count": 1,
                         "message": "no files to validate", "examples": []})
    report: dict[str, Any] = {
        "name": name,
        "passed": not failures,
        "checked_at": datetime.now(UTC).isoformat(),
        "files": files_info,
        "failures": failures,
        "warnings": warnings,
    }
    for w in warnings:
        log.warning("data validation %r: %s: %s", name, w["file"], w["message"])
    jpath, hpath = _write_reports(report, str(report_dir), name, store or objstore.DEFAULT_STORE)
    report["report_json"], report["report_html"] = jpath, hpath
    if failures:
        summary = "\n".join(
            f"  - {f['file']} [{f['table']}] {f['rule']}"
            + (f"({f['column']})" if f["column"] else "")
            + f": {f['message']}"
            + (f"; e.g. {json.dumps(f['examples'][:2], default=str)}" if f["examples"] else "")
            for f in failures
        )
        log.warning("data validation %r failed:\n%s", name, summary)
        if raise_on_failure:
            raise DataValidationError(
                f"data validation {name!r} failed: {len(failures)} rule(s) violated in {len(paths)} file(s) "
                f"(report: {jpath}):\n{summary}\nFix the upstream data (or the contract in the model YAML) and "
                "land the files again.",
                failures=failures,
            )
    return report
