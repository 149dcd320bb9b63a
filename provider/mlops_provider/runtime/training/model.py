"""The tabular model: preprocessing, the network and its MLflow pyfunc wrapper (runtime module).

One preprocessing code path (:meth:`Preprocessor.transform`) serves training, evaluation and
serving: the pyfunc :class:`TabularTorchModel` reloads the fitted preprocessor from its JSON
artifact and calls the same method, so there is no training-serving skew.

The pyfunc is logged as a *python_model instance* of this class; MLflow pickles it by
reference (``mlops_provider.runtime.training.model.TabularTorchModel``), so loading it needs the
``mlops_provider`` package importable (it is installed in the Airflow workers and in the bento
images). Its state is not pickled: weights and preprocessor live in two artifacts,
``state_dict`` (torch ``state_dict``) and ``model_config`` (JSON), read in ``load_context``.
The network is rebuilt from the architecture block recorded in ``model_config``
(:mod:`mlops_provider.runtime.training.architectures`); for a user entry point ``module:function`` that
module must be importable wherever the model is loaded (workers, gate, serving image).
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from mlflow.pyfunc import PythonModel
from torch import nn

from mlops_provider.runtime.training import calibration
from mlops_provider.runtime.training.architectures import (  # noqa: F401 - re-exported
    TabularMLP,
    TabularNet,
    build_network,
    embedding_dim,
    normalize_architecture,
)
from mlops_provider.runtime.training.heads import Head

log = logging.getLogger(__name__)

OOV_INDEX = 0  # index 0 of every categorical vocabulary: unseen / missing values
PREPROCESSOR_FORMAT = 1
STATE_DICT_ARTIFACT = "state_dict"
MODEL_CONFIG_ARTIFACT = "model_config"


# ---------------------------------------------------------------------------- preprocessing
@dataclass
class Preprocessor:
    """Numeric median imputation + standardisation; categorical vocabularies with an OOV bucket."""

    categorical: list[str]
    numeric: list[str]
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    vocab: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def fit(cls, df: pd.DataFrame, categorical: list[str], numeric: list[str]) -> Preprocessor:
        """Learn the statistics from ``df`` (the train split only)."""
        missing = [c for c in [*categorical, *numeric] if c not in df.columns]
        if missing:
            raise ValueError(f"Preprocessor.fit: columns {missing} are not in the frame ({list(df.columns)})")
        pre = cls(list(categorical), list(numeric))
        for col in numeric:
            values = pd.to_numeric(df[col], errors="coerce").astype("float64")
            median = float(values.median()) if values.notna().any() else 0.0
            filled = values.fillna(median)
            std = float(filled.std(ddof=0)) if len(filled) else 0.0
            pre.medians[col] = median
            pre.means[col] = float(filled.mean()) if len(filled) else 0.0
            pre.stds[col] = std if math.isfinite(std) and std > 1e-12 else 1.0
        for col in categorical:
            values = df[col].dropna().astype(str)
            pre.vocab[col] = sorted(values.unique().tolist())
        return pre

    @property
    def cardinalities(self) -> list[int]:
        """Embedding table sizes: vocabulary + the OOV bucket."""
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    @property
    def feature_columns(self) -> list[str]:
        return [*self.categorical, *self.numeric]

    def transform(self, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Raw feature frame -> (float32 [n, n_numeric], int64 [n, n_categorical]).

        Missing numeric columns / values are imputed with the train median; unseen or missing
        categories map to the OOV index 0. Extra columns are ignored.
        """
        n = len(df)
        x_num = np.empty((n, len(self.numeric)), dtype=np.float32)
        for j, col in enumerate(self.numeric):
            if col in df.columns:
                values = pd.to_numeric(df[col], errors="coerce").astype("float64").to_numpy()
            else:
                values = np.full(n, np.nan)
            values = np.where(np.isfinite(values), values, self.medians[col])
            x_num[:, j] = (values - self.means[col]) / self.stds[col]
        x_cat = np.zeros((n, len(self.categorical)), dtype=np.int64)
        for j, col in enumerate(self.categorical):
            if col not in df.columns:
                continue
            index = pd.Index(self.vocab[col])
            raw = df[col]
            codes = index.get_indexer(raw.astype(str).where(raw.notna(), None).to_numpy(dtype=object))
            x_cat[:, j] = np.where(codes >= 0, codes + 1, OOV_INDEX)
        return x_num, x_cat

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PREPROCESSOR_FORMAT,
            "categorical": self.categorical,
            "numeric": self.numeric,
            "medians": self.medians,
            "means": self.means,
            "stds": self.stds,
            "vocab": self.vocab,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        if d.get("format") != PREPROCESSOR_FORMAT:
            raise ValueError(f"unsupported preprocessor format {d.get('format')!r}")
        return cls(
            categorical=list(d["categorical"]),
            numeric=list(d["numeric"]),
            medians={k: float(v) for k, v in d["medians"].items()},
            means={k: float(v) for k, v in d["means"].items()},
            stds={k: float(v) for k, v in d["stds"].items()},
            vocab={k: list(v) for k, v in d["vocab"].items()},
        )

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        return cls.from_dict(json.loads(text))


# ---------------------------------------------------------------------------- network
# The networks live in runtime/training/architectures.py (registry of built-ins + user entry points);
# these names stay importable from here.


def build_mlp(
    arch: dict[str, Any] | None, n_numeric: int, cardinalities: list[int], n_outputs: int = 1, task: str = "binary"
) -> nn.Module:
    """The network of any architecture block (historical name: the MLP was the only one)."""
    return build_network(arch, n_numeric, list(cardinalities), n_outputs, task)


def predict_logits_arrays(
    net: nn.Module, x_num: np.ndarray, x_cat: np.ndarray, *, batch_size: int = 65536
) -> np.ndarray:
    """Raw network outputs (logits / standardised values) for preprocessed arrays, float64, eval mode."""
    device = next(net.parameters()).device
    was_training = net.training
    net.eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(x_num), batch_size):
            xn = torch.from_numpy(x_num[i : i + batch_size]).to(device)
            xc = torch.from_numpy(x_cat[i : i + batch_size]).to(device)
            out.append(net(xn, xc).float().cpu().numpy())
    net.train(was_training)
    return np.concatenate(out).astype(np.float64) if out else np.zeros(0, dtype=np.float64)


def predict_logits(net: nn.Module, pre: Preprocessor, df: pd.DataFrame) -> np.ndarray:
    """Raw network outputs for a raw feature frame."""
    x_num, x_cat = pre.transform(df)
    return predict_logits_arrays(net, x_num, x_cat)


def predict_outputs(net: nn.Module, pre: Preprocessor, head: Head, df: pd.DataFrame) -> np.ndarray:
    """What the pyfunc returns for a raw feature frame (the head's calibrated probabilities / values)."""
    return head.outputs(predict_logits(net, pre, df))


def predict_proba(
    net: nn.Module, pre: Preprocessor, df: pd.DataFrame, *, batch_size: int = 65536
) -> np.ndarray:
    """Binary: uncalibrated P(label == 1) for a raw feature frame (eval mode, CPU or the net's device)."""
    x_num, x_cat = pre.transform(df)
    return predict_proba_arrays(net, x_num, x_cat, batch_size=batch_size)


def predict_proba_arrays(
    net: nn.Module, x_num: np.ndarray, x_cat: np.ndarray, *, batch_size: int = 65536
) -> np.ndarray:
    """Binary: uncalibrated probabilities for already preprocessed arrays."""
    return calibration.apply("binary", predict_logits_arrays(net, x_num, x_cat, batch_size=batch_size), None)


# ---------------------------------------------------------------------------- pyfunc
def model_config(pre: Preprocessor, arch: dict[str, Any], head: Head | None = None) -> dict[str, Any]:
    """Everything except the weights needed to rebuild the model (the ``model_config`` artifact)."""
    head = head or Head()
    return {
        "preprocessor": pre.to_dict(),
        "architecture": normalize_architecture(arch),
        "cardinalities": pre.cardinalities,
        "head": head.to_dict(),
        **head.tags(),  # mlops.task, mlops.label, mlops.classes / mlops.quantiles, mlops.calibration (the contract)
    }


def load_model_parts(config: dict[str, Any], state_dict_path: str) -> tuple[nn.Module, Preprocessor, Head]:
    """Rebuild network, preprocessor and head from ``model_config`` (an entry point's module must be
    importable here). A config without a head (logged before task types) is a binary, uncalibrated model."""
    pre = Preprocessor.from_dict(config["preprocessor"])
    head = Head.from_dict(config.get("head"))
    net = build_network(config["architecture"], len(pre.numeric), list(config["cardinalities"]), head.n_outputs,
                        head.task)
    state = torch.load(state_dict_path, map_location="cpu", weights_only=True)
    net.load_state_dict(state)
    net.eval()
    return net, pre, head


def load_network(config: dict[str, Any], state_dict_path: str) -> tuple[nn.Module, Preprocessor]:
    """Network and preprocessor of ``model_config`` (see :func:`load_model_parts`)."""
    net, pre, _ = load_model_parts(config, state_dict_path)
    return net, pre


class TabularTorchModel(PythonModel):
    """``predict(raw feature frame)``: per task (``model_config``'s head; ``mlops_provider.tasks``): binary a
    1-D float64 array of calibrated P(label == 1); multiclass n x k calibrated class probabilities (columns in
    the order of the classes); regression the point predictions (1-D), or n x (1 + q) with the quantiles."""

    def load_context(self, context: Any) -> None:
        with open(context.artifacts[MODEL_CONFIG_ARTIFACT]) as f:
            config = json.load(f)
        self._net, self._pre, self._head = load_model_parts(config, context.artifacts[STATE_DICT_ARTIFACT])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        # a pd.DataFrame hint keeps MLflow's schema enforcement on the logged signature (no type-hint schema)
        df = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        return predict_outputs(self._net, self._pre, self._head, df)
