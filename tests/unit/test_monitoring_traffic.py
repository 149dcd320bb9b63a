"""Traffic hygiene: only live traffic enters a monitoring window (drift and performance alike).

The inference log carries a ``traffic`` column (live, smoke, infra_validation, warmup, shadow; set by the
service from the ``X-Mlops-Traffic`` header); older logs mark smoke tests only by the ``smoke-`` request_id
prefix. A log holding both, in parquet parts and a JSONL WAL, must give a window of the live rows only."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa

from mlops_provider.runtime.monitoring import window as dw
from mlops_provider.runtime.monitoring.drift import DriftRules
from mlops_provider.runtime.monitoring.statistics import window_means

DAY = "2026-07-02"


def _log(tmp_path):
    """A day of log: a new part (traffic column), an old part (smoke- ids only), a WAL (traffic field).

    Every non-live row carries absurd values (x = 1000, c = "test"): counted, they would be drift."""
    root = tmp_path / "log" / f"date={DAY}"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ts = pd.date_range(f"{DAY}T00:00:00Z", periods=400, freq="3min")
    kinds = ["live"] * 300 + ["smoke"] * 25 + ["infra_validation"] * 25 + ["warmup"] * 25 + ["shadow"] * 25
    new = pd.DataFrame({"timestamp": ts, "request_id": [f"r{i}" for i in range(400)], "traffic": kinds,
                        "x": np.where(np.array(kinds) == "live", rng.normal(0, 1, 400), 1000.0),
                        "c": np.where(np.array(kinds) == "live", "a", "test")})
    new.loc[new.index[:50], "traffic"] = None  # untagged rows of a new part: live unless a smoke- id
    new.to_parquet(root / "part-new-0.parquet", index=False)
    old = pd.DataFrame({"timestamp": pd.date_range(f"{DAY}T20:00:00Z", periods=60, freq="1min"),
                        "request_id": [f"smoke-{i}" if i < 20 else f"o{i}" for i in range(60)],
                        "x": [1000.0] * 20 + list(rng.normal(0, 1, 40)), "c": ["test"] * 20 + ["b"] * 40})
    old.to_parquet(root / "part-old-0.parquet", index=False)
    with open(root / "w1.jsonl", "w") as fh:
        for i in range(30):
            rec = {"timestamp": f"{DAY}T23:{i:02d}:00+00:00", "request_id": f"w{i}", "x": 0.5, "c": "a"}
            if i < 10:
                rec.update(traffic="warmup", x=1000.0, c="test")
            fh.write(json.dumps(rec) + "\n")
    return tmp_path / "log"


def test_traffic_kinds_prefer_the_column_and_fall_back_to_the_smoke_prefix():
    traffic = pa.chunked_array([pa.array([None, "live", "SMOKE", None, "", "shadow"])])
    rid = pa.chunked_array([pa.array(["a", "smoke-1", "x", "smoke-2", None, "s"])])
    assert dw.traffic_kinds(traffic, rid, 6).tolist() == ["live", "live", "smoke", "smoke", "live", "shadow"]
    assert dw.traffic_kinds(None, None, 2).tolist() == ["live", "live"]


def test_the_smoke_prefix_is_the_serving_side_one():
    from mlops_provider.runtime.serving.checks import SMOKE_ID_PREFIX

    assert dw.LEGACY_SMOKE_PREFIX == SMOKE_ID_PREFIX
    assert dw.TRAFFIC_HEADER == "X-Mlops-Traffic" and dw.TRAFFIC_KINDS[0] == dw.LIVE


def test_a_window_of_a_mixed_log_holds_only_live_traffic(tmp_path):
    log = _log(tmp_path)
    cols = {"x": "float", "c": "string"}
    everything = dw.open_log_window(log, cols, f"{DAY}T00:00:00+00:00", "2026-07-03T00:00:00+00:00", tmp_path / "a")
    assert everything.n_rows == 400 + 60 + 30 and everything.excluded == {}
    live = dw.open_log_window(log, cols, f"{DAY}T00:00:00+00:00", "2026-07-03T00:00:00+00:00", tmp_path / "b",
                              live_only=True)
    # new part: 300 live (50 of them untagged); old part: 40 (20 smoke- ids); WAL: 20 (10 warm-up)
    assert live.n_rows == 300 + 40 + 20
    assert live.excluded == {"smoke": 25 + 20, "infra_validation": 25, "warmup": 25 + 10, "shadow": 25}
    frame = dw.window_frame(live, ["x", "c", "request_id"])
    assert (frame["x"] < 100).all() and "test" not in set(frame["c"])
    assert not frame["request_id"].str.startswith("smoke-").any()
    assert abs(window_means(live, ["x"])["x"]) < 0.5  # the previous-window means see live rows only


def test_the_monitor_judges_live_traffic_only(tmp_path, monkeypatch):
    """Drift over the mixed day: the absurd test rows are not drift because they never enter the window."""
    from mlops_provider.runtime.monitoring import monitor
    from mlops_provider.runtime.monitoring.drift import reference_statistics
    from mlops_provider.runtime.monitoring.statistics import stream_current

    log = _log(tmp_path)
    rng = np.random.default_rng(1)
    ref = pd.DataFrame({"x": rng.normal(0, 1, 5000), "c": rng.choice(["a", "b"], 5000)})
    rules = DriftRules(calibration={"method": "none"})
    stats = reference_statistics(ref, ["x"], ["c"], rules)
    win = dw.open_log_window(log, {"x": "float", "c": "string"}, f"{DAY}T00:00:00+00:00",
                             "2026-07-03T00:00:00+00:00", tmp_path / "w", live_only=True)
    cur = stream_current(win, stats, ["x"], ["c"])
    assert cur.columns["c"]["unseen_share"] == 0.0 and cur.columns["x"]["mean"] < 1
    assert monitor.window_hours(f"{DAY}T00:00:00+00:00", "2026-07-03T00:00:00+00:00", win) == 24
