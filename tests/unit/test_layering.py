"""The import contracts of docs/architecture.md, checked on the source (AST, nothing imported).

    DAG files -> factory -> operators / sensors -> hooks / triggers / links
    runtime/ is imported only lazily (inside a function: execute, a trigger's run, a CLI command)
    runtime/ never imports config, factory, operators, sensors, hooks, triggers, links, notifications
    hooks never import operators, sensors or runtime
    heavy libraries are imported at module level only inside runtime/ (and the example)
    nothing outside examples/ imports the example

The checker is tested too: each rule fails on a module written to break it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "provider" / "mlops_provider"
P = "mlops_provider"
HEAVY = ("torch", "mlflow", "feast", "bentoml", "evidently", "pandas", "numpy", "sklearn", "pyarrow", "scipy")
UPPER_OF_RUNTIME = ("config", "factory", "operators", "sensors", "hooks", "triggers", "links", "notifications",
                    "cli", "embedded")


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name
    lazy: bool  # inside a function or method
    line: int


def _imports(tree: ast.AST, package: str) -> list[Import]:
    out: list[Import] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            in_func = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                out.extend(Import(a.name, lazy, child.lineno) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:  # relative
                    base = package.rsplit(".", child.level - 1)[0] if child.level > 1 else package
                    mod = f"{base}.{child.module}" if child.module else base
                else:
                    mod = child.module or ""
                out.append(Import(mod, lazy, child.lineno))
                out.extend(Import(f"{mod}.{a.name}", lazy, child.lineno) for a in child.names)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                continue  # typing-only imports are never executed
            visit(child, in_func)

    visit(tree, False)
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _room(module: str) -> str:
    """``mlops_provider.runtime.gate.checks`` -> ``runtime``; ``mlops_provider.config`` -> ``config``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == P else ""


def _is(module: str, room: str) -> bool:
    return module == f"{P}.{room}" or module.startswith(f"{P}.{room}.")


def violations(path: Path, module: str, source: str) -> list[str]:
    """Every contract ``source`` (the text of ``module`` at ``path``) breaks, as readable lines."""
    tree = ast.parse(source, filename=str(path))
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    room = _room(module)
    found: list[str] = []
    for imp in _imports(tree, package):
        target, where = imp.module, f"{path.relative_to(REPO) if path.is_relative_to(REPO) else path}:{imp.line}"
        top = target.split(".")[0]
        if room == "runtime":
            bad = [r for r in UPPER_OF_RUNTIME if _is(target, r)]
            if bad:
                found.append(f"{where}: runtime imports {target} (runtime never imports {bad[0]})")
        elif room == "hooks":
            if any(_is(target, r) for r in ("operators", "sensors", "runtime", "factory")):
                found.append(f"{where}: a hook imports {target} (hooks never import operators or runtime)")
        if room not in ("runtime", "examples") and _is(target, "runtime") and not imp.lazy:
            found.append(f"{where}: {module} imports {target} at module level (runtime only lazily)")
        if room != "examples" and _is(target, "examples"):
            found.append(f"{where}: {module} imports the example {target} (the library never does)")
        if room not in ("runtime", "examples") and top in HEAVY and not imp.lazy:
            found.append(f"{where}: {module} imports {top} at module level (heavy: only inside runtime/)")
        if room in ("operators", "sensors", "hooks", "triggers", "links") and _is(target, "factory"):
            found.append(f"{where}: {module} imports the factory (DAG files -> factory -> operators)")
        if room in ("hooks", "triggers", "links") and (_is(target, "operators") or _is(target, "sensors")):
            found.append(f"{where}: {module} imports {target} (operators sit above {room})")
    return found


def _modules() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out.append((path, ".".join(parts)))
    return out


def test_the_provider_keeps_its_import_contracts() -> None:
    found = [v for path, module in _modules() for v in violations(path, module, path.read_text())]
    assert not found, "import contracts broken:\n" + "\n".join(found)


def test_dag_files_and_plugins_import_no_runtime_at_module_level() -> None:
    found = []
    for path in [*sorted((REPO / "dags").glob("*.py")), *sorted((REPO / "plugins").glob("*.py"))]:
        for imp in _imports(ast.parse(path.read_text()), "dags"):
            if (_is(imp.module, "runtime") or imp.module.split(".")[0] in HEAVY) and not imp.lazy:
                found.append(f"{path.relative_to(REPO)}:{imp.line}: {imp.module}")
    assert not found, found


BREAKERS = [
    ("runtime/gate/bad.py", "mlops_provider.runtime.gate.bad", "from mlops_provider.config import load_config\n",
     "runtime never imports config"),
    ("runtime/bad.py", "mlops_provider.runtime.bad", "def f():\n    from mlops_provider.hooks.mlflow import MLflowHook\n",
     "runtime never imports hooks"),
    ("hooks/bad.py", "mlops_provider.hooks.bad", "def f():\n    from mlops_provider.runtime.io import objstore\n",
     "hooks never import operators or runtime"),
    ("operators/bad.py", "mlops_provider.operators.bad", "from mlops_provider.runtime.gate import evaluate\n",
     "runtime only lazily"),
    ("operators/bad.py", "mlops_provider.operators.bad", "import pandas as pd\n", "heavy: only inside runtime"),
    ("triggers/bad.py", "mlops_provider.triggers.bad", "import numpy\n", "heavy: only inside runtime"),
    ("factory.py", "mlops_provider.factory", "from mlops_provider.examples.flights import data\n",
     "the library never does"),
    ("hooks/bad.py", "mlops_provider.hooks.bad", "from mlops_provider.operators.gate import X\n",
     "hooks never import operators"),
]


@pytest.mark.parametrize(("rel", "module", "source", "expected"), BREAKERS)
def test_the_checker_catches_a_forbidden_import(rel: str, module: str, source: str, expected: str) -> None:
    found = violations(PKG / rel, module, source)
    assert any(expected in v for v in found), found


def test_lazy_and_type_checking_imports_are_allowed_where_the_rules_say() -> None:
    ok = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pandas\n"
          "def execute(self):\n    import pandas\n    from mlops_provider.runtime.gate import evaluate\n")
    assert violations(PKG / "operators/ok.py", "mlops_provider.operators.ok", ok) == []
