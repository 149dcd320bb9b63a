"""The service's greedy batcher: concurrent requests share model calls, a lone one is not kept waiting, a request
that queued too long (or a full queue) is refused as overloaded, a failing batch fails only its requests."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from mlops_provider.runtime.serving.batcher import GreedyBatcher, Overloaded


def test_concurrent_requests_share_model_calls_and_get_their_own_rows() -> None:
    calls: list[int] = []

    def fn(rows: list[int]) -> list[int]:
        calls.append(len(rows))
        time.sleep(0.05)
        return [r * 10 for r in rows]

    b = GreedyBatcher(fn, max_batch_size=16)

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(b.submit([i, i + 100]) for i in range(20)))

    out = asyncio.run(main())
    b.close()
    assert out == [[i * 10, (i + 100) * 10] for i in range(20)]
    assert sum(calls) == 40 and max(calls) <= 16 and len(calls) < 20  # batched, never above the limit
    assert calls[:2] == [16, 16]  # whole requests, everything queued up to the limit


def test_a_lone_request_is_scored_at_once() -> None:
    b = GreedyBatcher(lambda rows: rows, max_batch_size=512, max_latency_s=3.0)

    async def main() -> float:
        t = time.perf_counter()
        await b.submit([1])
        return time.perf_counter() - t

    assert asyncio.run(main()) < 0.5
    b.close()


def test_overload_and_failures_are_per_request() -> None:
    release = threading.Event()

    def slow(rows: list[int]) -> list[int]:
        release.wait(5)
        if -1 in rows:
            raise ValueError("bad row")
        return rows

    b = GreedyBatcher(slow, max_batch_size=4, max_latency_s=0.1, max_queue_rows=6)

    async def main() -> list[object]:
        first = asyncio.ensure_future(b.submit([1]))  # occupies the model thread
        await asyncio.sleep(0.05)
        queued = [asyncio.ensure_future(b.submit([2, 3])) for _ in range(3)]  # 6 rows queued: the limit
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded, match="queued"):
            await b.submit([4])
        await asyncio.sleep(0.2)  # the queued ones have now waited longer than max_latency_s
        release.set()
        return await asyncio.gather(first, *queued, return_exceptions=True)

    results = asyncio.run(main())
    assert results[0] == [1]
    assert all(isinstance(r, Overloaded) and "waited" in str(r) for r in results[1:])

    async def failing() -> list[object]:
        return await asyncio.gather(b.submit([-1]), b.submit([5]), return_exceptions=True)

    out = asyncio.run(failing())
    assert isinstance(out[0], ValueError)  # the failing batch fails its requests ...
    assert out[1] == [5] or isinstance(out[1], ValueError)  # (the other one only if it shared the batch)
    assert asyncio.run(b.submit([7])) == [7]  # ... and the batcher keeps serving
    b.close()
