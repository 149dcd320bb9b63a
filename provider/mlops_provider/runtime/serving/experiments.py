"""Online experiments inside one bento service: champion + challenger (runtime module).

Two modes (``ExperimentSpec.mode``):

- ``split`` ("99/1 forward test"): a configured ``share`` of the traffic is answered by the
  challenger. Routing is **sticky**: the bucket of a request is a hash of its routing key (by default
  the entity keys ``origin``/``carrier``/``tailnum``) salted with the experiment name, so the same
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
DEFAULT_ROUTE_BY = ("origin", "carrier", "tailnum")


class ExperimentSpec(BaseModel):
    """How the challenger takes part (bundled in the bento config as ``experiment``)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    mode: Literal["split", "shadow"] = "shadow"
    share: float = Field(0.01, ge=0.0, le=1.0, description="share of traffic the challenger answers (split)")
    route_by: list[str] = Field(default_factory=lambda: list(DEFAULT_ROUTE_BY), min_length=1)
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
    return "\x1e".join(str(row.get(k, "")) for k in route_by)


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

    ``champion`` / ``challenger`` are callables ``frame -> probabilities``. NaN marks a model that
    did not score a row.
    """
    n = len(frame)
    champ = np.full(n, np.nan)
    chall = np.full(n, np.nan)
    if spec is None or challenger is None:
        champ = _as_probs(champion(frame), n)
        return {
            "served": champ,
            "champion": champ,
            "challenger": chall,
            "to_challenger": np.zeros(n, dtype=bool),
        }
    to_chall = assign(rows, spec)
    if spec.mode == "shadow":
        champ = _as_probs(champion(frame), n)
        chall = _as_probs(challenger(frame), n)
        served = champ
    else:
        if (~to_chall).any():
            champ[~to_chall] = _as_probs(champion(frame[~to_chall]), int((~to_chall).sum()))
        if to_chall.any():
            chall[to_chall] = _as_probs(challenger(frame[to_chall]), int(to_chall.sum()))
        served = np.where(to_chall, chall, champ)
    return {"served": served, "champion": champ, "challenger": chall, "to_challenger": to_chall}


def _as_probs(raw: Any, n: int) -> np.ndarray:
    out = np.asarray(raw, dtype="float64").reshape(-1)
    if len(out) != n:
        raise ValueError(f"model returned {len(out)} predictions for {n} rows")
    return out


def compare_variants(frame: pd.DataFrame) -> dict[str, Any]:
    """Summary of an inference-log window of an experiment (per variant, and paired in shadow mode)."""
    out: dict[str, Any] = {"rows": int(len(frame)), "variants": {}}
    if frame.empty or "variant" not in frame.columns:
        return out
    for name, grp in frame.groupby("variant"):
        p = pd.to_numeric(grp["prediction"], errors="coerce")
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
