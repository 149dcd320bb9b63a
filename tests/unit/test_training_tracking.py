"""The training run's metric writer and the loop's intra-op thread policy (no MLflow server)."""

from __future__ import annotations

import time

import pytest
import torch

from mlops_provider.runtime.training.loop import cpu_threads, torch_threads
from mlops_provider.runtime.training.tracking import MetricWriter


class FakeClient:
    def __init__(self, fail: bool = False) -> None:
        self.batches: list[tuple[str, list]] = []
        self.fail = fail

    def log_batch(self, run_id: str, metrics: list) -> None:
        if self.fail:
            raise RuntimeError("store down")
        self.batches.append((run_id, list(metrics)))


def test_metric_writer_batches_rows_and_close_does_not_wait_for_the_interval():
    client = FakeClient()
    writer = MetricWriter(client, "run-1", interval_s=30.0)  # a long window: close() must cut it short
    for epoch in (1, 2, 3):
        writer.log({"train_loss": 0.5 / epoch, "val_loss": 0.6}, step=epoch)
    writer.log({"roc_auc": 0.7})
    started = time.monotonic()
    writer.close()
    assert time.monotonic() - started < 5.0
    writer.close()  # idempotent
    assert [run for run, _ in client.batches] == ["run-1"]  # one log_batch for the whole window
    points = [(m.key, m.step, m.value) for m in client.batches[0][1]]
    assert points[:2] == [("train_loss", 1, 0.5), ("val_loss", 1, 0.6)]
    assert ("train_loss", 3, pytest.approx(0.5 / 3)) in points and points[-1] == ("roc_auc", 0, 0.7)


def test_metric_writer_writes_again_after_each_window():
    client = FakeClient()
    writer = MetricWriter(client, "run-2", interval_s=0.05)
    writer.log({"a": 1.0}, step=1)
    deadline = time.monotonic() + 5
    while not client.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    writer.log({"a": 2.0}, step=2)
    writer.close()
    assert [[m.step for m in batch] for _, batch in client.batches] == [[1], [2]]


def test_a_failing_store_does_not_stop_training(caplog):
    writer = MetricWriter(FakeClient(fail=True), "run-3", interval_s=0.0)
    writer.log({"a": 1.0}, step=1)
    writer.close()
    assert "could not log 1 metric values: store down" in caplog.text


def test_cpu_threads_leave_a_core_to_background_work_and_are_restored():
    before = torch.get_num_threads()
    cpu = torch.device("cpu")
    assert cpu_threads(cpu, background=False) == before
    assert cpu_threads(cpu, background=True) == max(1, before - 1)
    assert cpu_threads(cpu, 3, background=True) == 3 and cpu_threads(cpu, 0) == 1
    assert cpu_threads(torch.device("cuda"), background=True) is None  # accelerators: leave torch alone
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), torch_threads(1):
        raise RuntimeError("restored on errors too")
    assert torch.get_num_threads() == before
