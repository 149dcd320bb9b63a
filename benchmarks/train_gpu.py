"""GPU training throughput: bf16 autocast vs fp32 eager, and achieved FLOP/s vs the card's peak.

Same loop shape as ``runtime.training.fit_network`` (in-memory tensors, index slicing, Adam,
``set_to_none``), the tabular network of ``runtime.architectures`` widened so the GPU has work
(``--hidden``). FLOPs per sample = 6 x the multiply-accumulates of the Linear layers (forward 2,
backward 4); embeddings and the optimizer are not counted, so the figure is a lower bound.
fp32 eager is the baseline measured in the same run. Without CUDA: prints a skip line, exits 0.

    python benchmarks/train_gpu.py [--rows 2000000] [--batch-size 8192] [--hidden 1024,1024,512]
"""

from __future__ import annotations

import argparse
import sys
import time

# dense (no sparsity) peak FLOP/s by device-name fragment: (bf16 tensor core, fp32 non-tensor)
PEAKS = [
    ("H200", 989e12, 67e12),
    ("H100 PCIe", 756e12, 51e12),
    ("H100", 989e12, 67e12),  # SXM
    ("A100", 312e12, 19.5e12),
]


def peak_for(name: str) -> tuple[float, float] | None:
    for fragment, bf16, fp32 in PEAKS:
        if fragment.lower() in name.lower():
            return bf16, fp32
    return None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--hidden", default="1024,1024,512")
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()

    import torch
    from torch import nn

    if not torch.cuda.is_available():
        print("skipped: no CUDA device (torch.cuda.is_available() is False); run on a GPU worker")
        print("RESULT train_gpu skipped=no_cuda")
        return 0

    from mlops_provider.runtime.training.architectures import build_network

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    hidden = [int(h) for h in args.hidden.split(",")]
    n_numeric, cards = 18, [4, 17]  # the flights_delay model's inputs (3 origins, 16 carriers + OOV)
    g = torch.Generator(device="cpu").manual_seed(0)
    xn = torch.randn(args.rows, n_numeric, generator=g).pin_memory().to(dev, non_blocking=True)
    xc = torch.stack([torch.randint(0, c, (args.rows,), generator=g) for c in cards], 1).pin_memory().to(dev)
    y = (torch.rand(args.rows, generator=g) < 0.2).float().to(dev)

    def run(amp: bool) -> tuple[float, float]:
        torch.manual_seed(0)
        net = build_network({"name": "mlp", "hidden": hidden, "dropout": 0.1}, n_numeric, cards).to(dev)
        macs = sum(m.in_features * m.out_features for m in net.modules() if isinstance(m, nn.Linear))
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)
        loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
        perm = torch.randperm(args.rows, device=dev)
        bs = args.batch_size

        def step(i: int) -> None:
            idx = perm[(i * bs) % (args.rows - bs):][:bs]
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                logits = net(xn[idx], xc[idx])
            (loss_fn(logits.float(), y[idx]) / bs).backward()
            opt.step()

        for i in range(20):  # warm-up (cuBLAS heuristics, allocator)
            step(i)
        torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(args.steps):
            step(i)
        torch.cuda.synchronize()
        sps = args.steps * bs / (time.perf_counter() - t)
        return sps, 6.0 * macs * sps

    fp32_sps, fp32_flops = run(False)
    bf16_sps, bf16_flops = run(True)
    peak = peak_for(name)
    print(f"device {name}; rows {args.rows}, batch {args.batch_size}, hidden {hidden}, {args.steps} timed steps")
    print(f"fp32 eager:    {fp32_sps:,.0f} samples/s, {fp32_flops / 1e12:.2f} TFLOP/s")
    print(f"bf16 autocast: {bf16_sps:,.0f} samples/s, {bf16_flops / 1e12:.2f} TFLOP/s")
    print(f"bf16 / fp32 samples/s = {bf16_sps / fp32_sps:.2f}x")
    if peak is None:
        print("card peak: unknown (not in the table: H100/H200/A100)")
        util = "unknown"
    else:
        util = f"{bf16_flops / peak[0]:.4f}"
        print(f"bf16 achieved / peak {peak[0] / 1e12:.0f} TFLOP/s = {bf16_flops / peak[0]:.2%}; "
              f"fp32 achieved / peak {peak[1] / 1e12:.1f} TFLOP/s = {fp32_flops / peak[1]:.2%}")
    print(f"RESULT train_gpu device={name.replace(' ', '_')} bf16_vs_fp32={bf16_sps / fp32_sps:.3f} "
          f"bf16_tflops={bf16_flops / 1e12:.2f} bf16_peak_fraction={util}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
