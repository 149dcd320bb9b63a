#!/usr/bin/env python3
"""`make audit`: pip-audit of every package uv.lock pins (all extras), with an honest "not checked".

Steps: ``uv export --frozen --all-extras`` -> a fully pinned, hashed requirements file; probe the advisory
sources pip-audit can use (OSV's API, PyPI's per-release JSON with its ``vulnerabilities``) with a short
timeout; run ``pip-audit --disable-pip --no-deps -r`` (nothing is installed or resolved) against the first
one that answers; summarize.

Exit codes: 0 = audited, no known vulnerability; 1 = vulnerabilities found (listed with fixed versions);
0 with "NOT CHECKED" when no advisory source is reachable from this machine (a CI runner that reaches only
package indexes cannot audit: that must not fail every build, but it is printed loudly), 3 instead with
``AUDIT_STRICT=1`` (use it where the sources are reachable, so a network problem cannot pass silently).
pip-audit itself runs through ``uv tool run`` (a pinned version from the package index, not a project
dependency).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

PIP_AUDIT = os.environ.get("PIP_AUDIT_VERSION", "2.9.0")
REPO = Path(__file__).resolve().parents[1]
SOURCES = {
    "osv": ("https://api.osv.dev/v1/query", b'{"package": {"name": "jinja2", "ecosystem": "PyPI"}, "version": "2.4.1"}'),
    "pypi": ("https://pypi.org/pypi/jinja2/2.4.1/json", None),
}


def uv() -> list[str]:
    from shutil import which

    return [which("uv")] if which("uv") else [sys.executable, "-m", "uv"]


def probe(url: str, body: bytes | None, timeout: float = 8.0) -> str | None:
    """None when the source answers with advisories, else why not."""
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - fixed https URLs
            data = json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return f"{url} answered HTTP {e.code}"
    except (urllib.error.URLError, OSError, ValueError) as e:
        return f"{url} unreachable ({type(e).__name__}: {getattr(e, 'reason', e)})"
    if not (data.get("vulns") or data.get("vulnerabilities")):
        return f"{url} answered without advisories (a mirror, not the advisory source)"
    return None


def summarize(report: dict) -> tuple[list[dict], list[dict], int]:
    """(vulnerable deps, skipped deps, number audited) of a pip-audit JSON report."""
    deps = report.get("dependencies") or []
    vulnerable = [d for d in deps if d.get("vulns")]
    skipped = [d for d in deps if d.get("skip_reason")]
    return vulnerable, skipped, len(deps) - len(skipped)


def main() -> int:
    strict = os.environ.get("AUDIT_STRICT") == "1"
    why = {}
    source = None
    for name, (url, body) in SOURCES.items():
        why[name] = probe(url, body)
        if why[name] is None:
            source = name
            break
    if source is None:
        print("pip-audit: NOT CHECKED - no advisory source is reachable from this machine:")
        for name, reason in why.items():
            print(f"  {name}: {reason}")
        print("Run `make audit` where OSV (api.osv.dev) or PyPI's JSON API answers.")
        return 3 if strict else 0
    with tempfile.TemporaryDirectory(prefix="mlops-audit-") as tmp:
        req = Path(tmp) / "requirements.txt"
        subprocess.run([*uv(), "export", "--frozen", "--all-extras", "--no-emit-project", "-q", "-o", str(req)],
                       cwd=REPO, check=True)
        out = Path(tmp) / "audit.json"
        r = subprocess.run([*uv(), "tool", "run", "--from", f"pip-audit=={PIP_AUDIT}", "pip-audit", "-r", str(req),
                            "--disable-pip", "--no-deps", "-s", source, "-f", "json", "-o", str(out),
                            "--progress-spinner", "off"], cwd=REPO, capture_output=True, text=True, timeout=1800)
        if not out.exists():
            print(f"pip-audit: NOT CHECKED - pip-audit failed ({r.returncode}):\n{r.stderr[-2000:]}")
            return 3 if strict else 0
        vulnerable, skipped, audited = summarize(json.loads(out.read_text()))
    if audited == 0:
        print(f"pip-audit: NOT CHECKED - {source} knew none of the {len(skipped)} locked packages "
              f"(e.g. {skipped[0].get('skip_reason') if skipped else '-'})")
        return 3 if strict else 0
    print(f"pip-audit ({source}): {audited} locked packages audited, {len(skipped)} skipped, "
          f"{len(vulnerable)} with known vulnerabilities")
    for d in vulnerable:
        for v in d["vulns"]:
            fixes = ", ".join(v.get("fix_versions") or []) or "no fix released"
            print(f"  {d['name']}=={d['version']}: {v['id']} ({', '.join(v.get('aliases') or [])}) fixed in {fixes}")
    return 1 if vulnerable else 0


if __name__ == "__main__":
    sys.exit(main())
