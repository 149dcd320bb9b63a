"""The training benchmarks run to their RESULT line (tiny sizes; no timing assertions)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True, text=True,
                          timeout=240, cwd=REPO)


def test_train_loop_benchmark_reports_its_ratios():
    proc = _run("train_loop.py", "--rows", "4000", "--epochs", "3", "--naive-epochs", "1", "--repeat", "1")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = [line for line in proc.stdout.splitlines() if line.startswith("RESULT train_loop ")]
    assert len(result) == 1, proc.stdout[-2000:]
    fields = dict(kv.split("=", 1) for kv in result[0].split()[2:])
    assert {"ratio", "vs_dataloader", "mlflow_log_share", "checkpoint_ms_per_epoch", "mlflow_fixed_s"} <= set(fields)
    assert float(fields["ratio"]) > 0 and float(fields["vs_dataloader"]) > 0
    assert 0 <= float(fields["mlflow_log_share"]) < 1 and float(fields["mlflow_fixed_s"]) >= 0


def test_gpu_benchmark_skips_cleanly_or_reports():
    import torch

    proc = _run("train_gpu.py", "--rows", "200000", "--steps", "20")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    if torch.cuda.is_available():
        assert "RESULT train_gpu device=" in proc.stdout and "bf16_vs_fp32=" in proc.stdout
    else:
        assert "skipped: no CUDA device" in proc.stdout and "RESULT train_gpu skipped=no_cuda" in proc.stdout
