"""Loading the user's feature-pipeline transform (``"file.py:function"`` / ``"module:function"``)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops_provider.exceptions import FeatureStoreError


def load_callable(spec: str) -> Callable[..., Any]:
    """``"path/to/file.py:function"`` or ``"package.module:function"`` -> the function."""
    target, sep, func = spec.rpartition(":")
    if not sep or not target or not func:
        raise FeatureStoreError(
            f"transform {spec!r} must look like 'path/to/file.py:function' or 'package.module:function'"
        )
    if target.endswith(".py"):
        path = Path(target).expanduser()
        if not path.is_absolute():
            path = Path.cwd() / path
        if not path.is_file():
            raise FeatureStoreError(f"transform file {path} does not exist (from {spec!r})")
        name = "mlops_transform_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        mod_spec = importlib.util.spec_from_file_location(name, path)
        if mod_spec is None or mod_spec.loader is None:
            raise FeatureStoreError(f"cannot import transform file {path}")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[name] = module
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:
            del sys.modules[name]
            raise FeatureStoreError(f"importing transform file {path} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise FeatureStoreError(f"cannot import transform module {target!r}: {e}") from e
    fn = getattr(module, func, None)
    if not callable(fn):
        raise FeatureStoreError(f"transform {spec!r}: {func!r} is not a function of {target}")
    return fn

__all__ = ["load_callable"]
