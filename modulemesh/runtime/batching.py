"""Dynamic batching: queue requests, concatenate along dim 0, run off the loop, split back.

One dispatcher coroutine forms batches and ``workers`` threads run them (onnxruntime releases
the GIL and uses its own intra-op threads). A batch is formed only when a worker is free, so
while all workers are busy new requests queue up and the next batch fills itself under load;
otherwise a batch waits at most ``max_delay`` after its oldest request for company. Two
workers let the next batch compute while the previous one's responses are encoded and its
callers send their next requests. Requests whose non-batch shapes or dtypes differ never share a
batch. The queue is bounded: :class:`QueueFull` lets the server answer 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger("modulemesh.runtime")

Arrays = dict[str, np.ndarray[Any, Any]]
RunFn = Callable[[Mapping[str, np.ndarray[Any, Any]]], Arrays]
BatchKey = tuple[tuple[str, str, tuple[int, ...]], ...]


class QueueFull(Exception):
    """The batch queue holds ``max_queue`` requests already."""


class BatchError(Exception):
    """Inference of the batch failed; every request in it gets this."""


@dataclass
class _Item:
    key: BatchKey
    inputs: Mapping[str, np.ndarray[Any, Any]]
    rows: int
    future: asyncio.Future[tuple[Arrays, int]]
    enqueued: float


def batch_key(inputs: Mapping[str, np.ndarray[Any, Any]]) -> BatchKey:
    """Requests with equal keys (names, dtypes, non-batch dims) can be concatenated."""
    return tuple(sorted((n, a.dtype.str, tuple(a.shape[1:])) for n, a in inputs.items()))


class Batcher:
    """Batches requests for ``run``; ``max_batch_size <= 1`` turns batching off."""

    def __init__(
        self,
        run: RunFn,
        *,
        max_batch_size: int,
        max_delay_s: float,
        max_queue: int,
        workers: int = 1,
    ) -> None:
        self._run = run
        self.max_batch_size = max(1, max_batch_size)
        self.max_delay_s = max(0.0, max_delay_s)
        self.max_queue = max(1, max_queue)
        self._queue: collections.deque[_Item] = collections.deque()
        self._rows_by_key: dict[BatchKey, int] = collections.defaultdict(int)
        self._wakeup = asyncio.Event()
        self.workers = max(1, workers)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ort")
        self._slots = asyncio.Semaphore(self.workers)
        self._running: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        self.in_flight = 0
        self.batches = 0
        self.rows = 0
        self._fills: collections.deque[float] = collections.deque(maxlen=100)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the batch being run)."""
        return len(self._queue)

    @property
    def batch_fill(self) -> float:
        """Mean rows-per-batch / max_batch_size over recent batches (0 before any)."""
        return sum(self._fills) / len(self._fills) if self._fills else 0.0

    def start(self) -> None:
        """Start the dispatcher on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._dispatch(), name="batcher")

    async def close(self) -> None:
        """Stop the dispatcher and the worker (call once nothing is queued)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._executor.shutdown(wait=True)

    async def submit(
        self, inputs: Mapping[str, np.ndarray[Any, Any]], rows: int
    ) -> tuple[Arrays, int]:
        """Queue one request; returns its own output rows and the size of its batch."""
        if len(self._queue) >= self.max_queue:
            raise QueueFull(f"batch queue is full ({self.max_queue} requests waiting)")
        item = _Item(
            batch_key(inputs),
            inputs,
            rows,
            asyncio.get_running_loop().create_future(),
            time.monotonic(),
        )
        self._queue.append(item)
        self._rows_by_key[item.key] += rows
        self._wakeup.set()
        return await item.future

    def run_direct(self, inputs: Mapping[str, np.ndarray[Any, Any]]) -> Arrays:
        """Run once on the worker thread's session outside the queue (warm-up)."""
        return self._run(inputs)

    async def _wait(self, timeout: float | None) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), timeout)

    def _take(self, key: BatchKey) -> list[_Item]:
        """Remove and return the oldest same-key items up to max_batch_size rows (>= 1 item)."""
        taken: list[_Item] = []
        kept: collections.deque[_Item] = collections.deque()
        rows = 0
        for item in self._queue:
            if item.key == key and (not taken or rows + item.rows <= self.max_batch_size):
                taken.append(item)
                rows += item.rows
            else:
                kept.append(item)
        self._queue = kept
        self._rows_by_key[key] -= rows
        if self._rows_by_key[key] <= 0:
            del self._rows_by_key[key]
        return [item for item in taken if not item.future.done()]

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            while not self._queue:
                await self._wait(None)
            first = self._queue[0]
            deadline = first.enqueued + self.max_delay_s
            while self._rows_by_key.get(first.key, 0) < self.max_batch_size:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                await self._wait(remaining)
            batch = self._take(first.key)
            if not batch:
                self._slots.release()
                continue
            task = loop.create_task(self._execute(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _execute(self, batch: list[_Item]) -> None:
        """Run one batch on a worker thread and hand each request its rows."""
        loop = asyncio.get_running_loop()
        size = sum(item.rows for item in batch)
        self.in_flight += size
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_batch, batch)
        except Exception as exc:
            log.exception("batch of %d requests failed", len(batch))
            error = BatchError(f"inference failed: {exc}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        finally:
            self.in_flight -= size
            self._slots.release()
        self.batches += 1
        self.rows += size
        self._fills.append(min(1.0, size / self.max_batch_size))
        for item, result in zip(batch, outputs, strict=True):
            if not item.future.done():
                item.future.set_result((result, size))

    def _run_batch(self, batch: list[_Item]) -> list[Arrays]:
        """Worker thread: concatenate, run, split so each request gets exactly its rows."""
        if len(batch) == 1:
            return [self._run(batch[0].inputs)]
        names = list(batch[0].inputs)
        merged = {n: np.concatenate([item.inputs[n] for item in batch], axis=0) for n in names}
        outputs = self._run(merged)
        total = sum(item.rows for item in batch)
        for name, array in outputs.items():
            if array.ndim == 0 or array.shape[0] != total:
                raise BatchError(
                    f"output {name!r} has leading dimension {array.shape[:1]} for a batch of "
                    f"{total} rows; cannot split it"
                )
        results: list[Arrays] = []
        offset = 0
        for item in batch:
            end = offset + item.rows
            results.append({n: a[offset:end] for n, a in outputs.items()})
            offset = end
        return results
