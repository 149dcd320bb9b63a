"""Unit tests of the tabular model: preprocessing, MLP shapes, sanity check."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mlops_provider.exceptions import SanityCheckError, TrainingError
from mlops_provider.runtime.training.loop import sanity_check
from mlops_provider.runtime.training.model import OOV_INDEX, Preprocessor, build_mlp, normalize_architecture

CAT = ["origin", "carrier"]
NUM = ["temp", "distance", "always_nan"]


def frame(n: int = 200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "origin": rng.choice(["JFK", "LGA", "EWR"], n),
        "carrier": rng.choice(["UA", "AA", "DL", "B6"], n),
        "temp": rng.normal(40, 10, n),
        "distance": rng.integers(100, 2500, n).astype("int64"),
        "always_nan": np.full(n, np.nan),
    })
    df.loc[::7, "temp"] = np.nan
    score = (df["temp"].fillna(40) - 40) / 10 + (df["origin"] == "JFK") * 1.5 - 0.5
    df["y"] = (score + rng.normal(0, 0.3, n) > 0).astype(int)
    df["split"] = "train"
    return df


def test_preprocessor_json_round_trip_transforms_identically():
    df = frame()
    pre = Preprocessor.fit(df, CAT, NUM)
    again = Preprocessor.from_json(pre.to_json())
    a_num, a_cat = pre.transform(df)
    b_num, b_cat = again.transform(df)
    np.testing.assert_array_equal(a_num, b_num)
    np.testing.assert_array_equal(a_cat, b_cat)
    assert again.to_dict() == pre.to_dict()


def test_preprocessor_imputes_and_standardises_numeric():
    df = frame()
    pre = Preprocessor.fit(df, CAT, NUM)
    x_num, _ = pre.transform(df)
    assert x_num.dtype == np.float32 and x_num.shape == (len(df), len(NUM))
    assert np.isfinite(x_num).all()
    assert abs(float(x_num[:, 0].mean())) < 1e-4 and abs(float(x_num[:, 0].std()) - 1) < 1e-3
    # a NaN is imputed with the train median
    expected = (pre.medians["temp"] - pre.means["temp"]) / pre.stds["temp"]
    assert x_num[0, 0] == pytest.approx(expected, rel=1e-5)
    # an all-NaN column imputes to 0 and stays finite
    assert pre.medians["always_nan"] == 0.0 and (x_num[:, 2] == 0).all()


def test_preprocessor_maps_unseen_and_missing_categories_to_oov():
    pre = Preprocessor.fit(frame(), CAT, NUM)
    new = pd.DataFrame({"origin": ["JFK", "SFO", None], "carrier": ["UA", "ZZ", "AA"], "temp": [1.0, None, 3.0]})
    x_num, x_cat = pre.transform(new)  # 'distance' / 'always_nan' absent: imputed
    assert x_cat.dtype == np.int64
    assert x_cat[0, 0] == pre.vocab["origin"].index("JFK") + 1
    assert x_cat[1, 0] == OOV_INDEX and x_cat[2, 0] == OOV_INDEX and x_cat[1, 1] == OOV_INDEX
    assert x_cat[2, 1] == pre.vocab["carrier"].index("AA") + 1
    assert np.isfinite(x_num).all() and x_num.shape == (3, 3)
    assert pre.cardinalities == [4, 5]


def test_mlp_output_shape_and_architecture_validation():
    net = build_mlp({"hidden": [16, 8], "dropout": 0.2}, n_numeric=3, cardinalities=[4, 5])
    out = net(torch.randn(7, 3), torch.randint(0, 4, (7, 2)))
    assert out.shape == (7,)
    linear = [m for m in net.mlp if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linear] == [16, 8, 1]
    assert normalize_architecture(None) == {"name": "mlp", "hidden": [64, 32], "dropout": 0.1}
    with pytest.raises(TrainingError, match="unknown architecture keys"):
        normalize_architecture({"hidden": [8], "layers": 3})
    with pytest.raises(TrainingError):
        normalize_architecture({"hidden": [0]})


def test_sanity_check_passes_on_a_learnable_batch():
    result = sanity_check(frame(), CAT, NUM, "y", {"hidden": [32, 16], "dropout": 0.1}, seed=3)
    assert result["final_loss"] < 0.7 * result["initial_loss"]


class _ConstantNet(nn.Module):
    """A broken model: ignores its input, so it cannot fit anything beyond the base rate."""

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1))

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(x_num.shape[0])


class _WrongShapeNet(nn.Module):
    def __init__(self, n_numeric: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n_numeric, 2)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        return self.lin(x_num)


def test_sanity_check_fails_on_a_model_that_cannot_learn():
    df = frame()
    df["y"] = np.arange(len(df)) % 2  # balanced, so the base rate is already optimal for a constant
    with pytest.raises(SanityCheckError, match="cannot overfit"):
        sanity_check(df, CAT, NUM, "y", None, build=lambda a, n, c, *task: _ConstantNet())


def test_sanity_check_fails_on_wrong_output_shape():
    with pytest.raises(SanityCheckError, match="shape"):
        sanity_check(frame(), CAT, NUM, "y", None, build=lambda a, n, c, *task: _WrongShapeNet(n))


def test_sanity_check_fails_when_learning_rate_is_zero():
    with pytest.raises(SanityCheckError):
        sanity_check(frame(), CAT, NUM, "y", None, lr=0.0)


def test_sanity_check_uses_the_tasks_head():
    from mlops_provider.runtime.training.heads import Head
    from mlops_provider.specs import TrainingSpec

    df = frame()
    df["k"] = np.where(df["temp"].fillna(40) > 45, "hot", np.where(df["origin"] == "JFK", "jfk", "other"))
    df["v"] = df["temp"].fillna(40) * 2 + (df["origin"] == "JFK") * 10
    spec = TrainingSpec.parse(label="k", task="multiclass", features={"categorical": CAT, "numeric": NUM})
    head = Head.fit(spec, df["k"], "test")
    assert head.classes == ["hot", "jfk", "other"] and head.n_outputs == 3
    result = sanity_check(df, CAT, NUM, "k", {"hidden": [32]}, head=head, seed=1)
    assert result["final_loss"] < 0.7 * result["initial_loss"]
    spec = TrainingSpec.parse(label="v", task="regression", quantiles=[0.2, 0.8],
                              features={"categorical": CAT, "numeric": NUM})
    head = Head.fit(spec, df["v"], "test")
    assert head.n_outputs == 3
    result = sanity_check(df, CAT, NUM, "v", {"hidden": [32]}, head=head, seed=1)
    assert result["final_loss"] < 0.7 * result["initial_loss"]
    # a network of the wrong width for the task is named before any training
    with pytest.raises(SanityCheckError, match=r"expected \(128, 3\).*task regression"):
        sanity_check(df, CAT, NUM, "v", None, head=head, build=lambda a, n, c, *task: _WrongShapeNet(n))
