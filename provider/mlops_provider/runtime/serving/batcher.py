"""Greedy adaptive batching for the bento service's ``/predict`` (runtime module, no BentoML import).

Every HTTP request's rows join one queue; a single consumer takes **everything queued** (whole requests, up
to ``max_batch_size`` rows) as soon as the model thread is free and scores it in one call. Under load the
batches grow by themselves (the requests that arrived while the previous batch ran); a lone request is
scored at once, without waiting for company.

Why not BentoML's ``batchable=True`` (its CorkDispatcher): that dispatcher waits to "cork" a batch for about
the average wait it observed before, which feeds back on itself; measured with
``benchmarks/serving_throughput.py`` its single worker idled about half the time at 32 callers (52 % CPU).

Overload: a request that waited longer than ``max_latency_s`` before its batch started, or that arrives
while more than ``max_queue_rows`` rows are queued, fails with :class:`Overloaded` (the service answers 503
"overloaded" with ``Retry-After``). A failing batch fails every request in it.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mlops_provider.exceptions import MlopsError


class Overloaded(MlopsError):
    """The request waited too long (or the queue is full): retry later."""


@dataclass
class _Job:
    rows: list[Any]
    future: asyncio.Future[list[Any]]
    enqueued: float = field(default_factory=time.monotonic)


class GreedyBatcher:
    """One queue, one consumer, one model thread (module docstring)."""

    def __init__(
        self,
        fn: Callable[[list[Any]], Sequence[Any]],
        *,
        max_batch_size: int = 512,
        max_latency_s: float = 3.0,
        max_queue_rows: int | None = None,
    ) -> None:
        self.fn = fn
        self.max_batch_size = max(1, int(max_batch_size))
        self.max_latency_s = float(max_latency_s)
        self.max_queue_rows = int(max_queue_rows or 8 * self.max_batch_size)
        self._queue: collections.deque[_Job] = collections.deque()
        self._queued_rows = 0
        self._consumer: asyncio.Task[None] | None = None
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlops-batch")
        self.batches = 0

    async def submit(self, rows: Sequence[Any]) -> list[Any]:
        """The outputs of ``fn`` for ``rows`` (one request), scored together with whatever else is queued."""
        if self._queued_rows + len(rows) > self.max_queue_rows:
            raise Overloaded(f"{self._queued_rows} rows are queued (limit {self.max_queue_rows})")
        loop = asyncio.get_running_loop()
        job = _Job(list(rows), loop.create_future())
        self._queue.append(job)
        self._queued_rows += len(job.rows)
        if self._consumer is None or self._consumer.done():
            self._consumer = loop.create_task(self._consume())
        return await job.future

    def _take(self) -> list[_Job]:
        """Whole requests from the head of the queue, up to max_batch_size rows (at least one request)."""
        now = time.monotonic()
        batch: list[_Job] = []
        size = 0
        while self._queue:
            job = self._queue[0]
            if job.future.done():  # the caller went away
                self._queue.popleft()
                self._queued_rows -= len(job.rows)
                continue
            if now - job.enqueued > self.max_latency_s:
                self._queue.popleft()
                self._queued_rows -= len(job.rows)
                job.future.set_exception(Overloaded(
                    f"waited {now - job.enqueued:.2f} s for the model (limit {self.max_latency_s:.2f} s)"))
                continue
            if batch and size + len(job.rows) > self.max_batch_size:
                break
            self._queue.popleft()
            self._queued_rows -= len(job.rows)
            batch.append(job)
            size += len(job.rows)
        return batch

    async def _consume(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._take()
            if not batch:
                continue
            rows = [r for job in batch for r in job.rows]
            try:
                out = list(await loop.run_in_executor(self._executor, self.fn, rows))
                if len(out) != len(rows):
                    raise RuntimeError(f"batch function returned {len(out)} outputs for {len(rows)} rows")
            except Exception as e:  # noqa: BLE001 - every request of the batch gets the error
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(e)
                continue
            self.batches += 1
            i = 0
            for job in batch:
                if not job.future.done():
                    job.future.set_result(out[i : i + len(job.rows)])
                i += len(job.rows)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
