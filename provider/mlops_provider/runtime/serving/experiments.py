"""Online experiments inside one bento service: champion + challenger (runtime module).

Two modes (``ExperimentSpec.mode``):

- ``split`` ("99/1 forward test"): a configured ``share`` of the traffic is answered by the
  challenger. Routing is **sticky**: the bucket of a request is a hash of its routing key (by default
  the entity join keys of the model's feature service) salted with the experiment name, so the same
  entity always gets the same model for the life of the experiment, in every worker and replica.
- ``shadow``: the challenger scores every request but only the champion's answer is returned.

Both predictions are logged (``champion_prediction`` / ``challenger_prediction``; in ``split`` mode
only the model that answered is computed, the other column is null), with ``variant`` naming the
model that answered and ``challenger_version``. :func:`compare_variants` summarises a logged window
for the monitoring comparison.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, model_validator

CHAMPION = "champion"
CHALLENGER = "challenger"


class ExperimentSpec(BaseModel):
    """How the challenger takes part (bundled in the bento config as ``experiment``)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    mode: Literal["split", "shadow"] = "shadow"
    share: float = Field(0.01, ge=0.0, le=1.0, description="share of traffic the challenger answers (split)")
    route_by: list[str] = Field(
        default_factory=list, description="request fields hashed for the sticky split; empty: every field"
    )
    name: str = Field("", description="salt of the routing hash; a new name reshuffles the buckets")
    challenger_tag: str = Field(..., description="BentoML model tag of the challenger")
    challenger_version: str = Field(..., description="MLflow version of the challenger")

    @model_validator(mode="after")
    def _default_name(self) -> ExperimentSpec:
        if not self.name:
            self.name = f"challenger-v{self.challenger_version}"
        return self


def bucket(key: str, salt: str = "") -> float:
    """Deterministic position of ``key`` in [0, 1) (blake2b; the same in every process and host)."""
    digest = hashlib.blake2b(f"{salt}\x1f{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def routing_key(row: Mapping[str, Any], route_by: Sequence[str]) -> str:
    keys = list(route_by) or sorted(k for k in row if k not in ("request_id", "event_timestamp"))
    return "\x1e".join(str(row.get(k, "")) for k in keys)


def assign(rows: Sequence[Mapping[str, Any]], spec: ExperimentSpec) -> np.ndarray:
    """Boolean mask: True where the challenger answers (always False in shadow mode)."""
    if spec.mode != "split" or spec.share <= 0:
        return np.zeros(len(rows), dtype=bool)
    return np.array([bucket(routing_key(r, spec.route_by), spec.name) < spec.share for r in rows], dtype=bool)


def run_experiment(
    frame: pd.DataFrame,
    rows: Sequence[Mapping[str, Any]],
    spec: ExperimentSpec | None,
    champion: Any,
    challenger: Any | None,
) -> dict[str, np.ndarray]:
    """Score ``frame`` under ``spec``; returns arrays ``served``, ``champion``, ``challenger``, ``to_challenger``.

    ``champion`` / ``challenger`` are callables ``frame -> outputs`` (1-D: one score per row; 2-D: one row of
    scores per row, e.g. class probabilities). NaN marks a model that did not score a row.
    """
    n = len(frame)
    if spec is None or challenger is None:
        champ = _as_outputs(champion(frame), n)
        return {
            "served": champ,
            "champion": champ,
            "challenger": np.full(champ.shape, np.nan),
            "to_challenger": np.zeros(n, dtype=bool),
        }
    to_chall = assign(rows, spec)
    if spec.mode == "shadow":
        champ = _as_outputs(champion(frame), n)
        chall = _as_outputs(challenger(frame), n)
        return {"served": champ, "champion": champ, "challenger": chall, "to_challenger": to_chall}
    parts: dict[bool, np.ndarray] = {}
    for flag, model in ((False, champion), (True, challenger)):
        mask = to_chall == flag
        if mask.any():
            parts[flag] = _as_outputs(model(frame[mask]), int(mask.sum()))
    shape = next(iter(parts.values())).shape[1:] if parts else ()
    champ = np.full((n, *shape), np.nan)
    chall = np.full((n, *shape), np.nan)
    if False in parts:
        champ[~to_chall] = parts[False]
    if True in parts:
        chall[to_chall] = parts[True]
    served = np.where(to_chall.reshape(-1, *([1] * len(shape))), chall, champ)
    return {"served": served, "champion": champ, "challenger": chall, "to_challenger": to_chall}


def _as_outputs(raw: Any, n: int) -> np.ndarray:
    out = np.asarray(raw, dtype="float64")
    if out.ndim == 0 or out.ndim > 2 or out.shape[0] != n:
        raise ValueError(f"model returned output of shape {out.shape} for {n} rows")
    if out.ndim == 2 and out.shape[1] == 1:
        out = out[:, 0]
    return out


def compare_variants(frame: pd.DataFrame) -> dict[str, Any]:
    """Summary of an inference-log window of an experiment (per variant, and paired in shadow mode)."""
    out: dict[str, Any] = {"rows": int(len(frame)), "variants": {}}
    if frame.empty or "variant" not in frame.columns:
        return out
    score = "probability" if "probability" in frame.columns else "prediction"
    for name, grp in frame.groupby("variant"):
        p = pd.to_numeric(grp[score], errors="coerce")
        out["variants"][str(name)] = {
            "rows": int(len(grp)),
            "share": float(len(grp) / len(frame)),
            "mean_prediction": float(p.mean()) if p.notna().any() else None,
            "model_versions": sorted(map(str, grp["model_version"].dropna().unique())),
        }
    if {"champion_prediction", "challenger_prediction"} <= set(frame.columns):
        a = pd.to_numeric(frame["champion_prediction"], errors="coerce")
        b = pd.to_numeric(frame["challenger_prediction"], errors="coerce")
        both = a.notna() & b.notna()
        if both.any():
            out["paired"] = {
                "rows": int(both.sum()),
                "mean_abs_diff": float((a[both] - b[both]).abs().mean()),
                "agreement_at_0_5": float(((a[both] >= 0.5) == (b[both] >= 0.5)).mean()),
            }
    return out
