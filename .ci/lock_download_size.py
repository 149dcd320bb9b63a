"""Bytes a fresh `uv sync --frozen` downloads: for every distribution installed in this interpreter's
environment, the size of the wheel uv.lock selects for this platform (best tag first); sdists count when
no wheel fits. Also fails if the lock names any source other than PyPI (or the project itself)."""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

lock = tomllib.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "uv.lock").read_text())
installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
priority = {t: i for i, t in enumerate(sys_tags())}
bad, total, count = [], 0, 0
for pkg in lock["package"]:
    source = pkg.get("source", {})
    if "registry" in source and source["registry"] != "https://pypi.org/simple":
        bad.append(f"{pkg['name']}: registry {source['registry']}")
    elif not ({"registry", "editable", "virtual"} & set(source)):
        bad.append(f"{pkg['name']}: source {source}")
    name = canonicalize_name(pkg["name"])
    if installed.get(name) != pkg.get("version") or "registry" not in source:
        continue
    best = None
    for w in pkg.get("wheels", []):
        fname = w["url"].rsplit("/", 1)[-1]
        tags = parse_wheel_filename(fname)[3]
        rank = min((priority[t] for t in tags if t in priority), default=None)
        if rank is not None and (best is None or rank < best[0]):
            best = (rank, int(w.get("size", 0)))
    size = best[1] if best else int(pkg.get("sdist", {}).get("size", 0))
    total += size
    count += 1
if bad:
    print("uv.lock names sources outside the public index:\n  " + "\n  ".join(bad), file=sys.stderr)
    sys.exit(1)
print(f"{count} distributions, {total / 1e9:.2f} GB downloaded from https://pypi.org")
