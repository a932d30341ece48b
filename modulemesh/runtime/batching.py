"""Dynamic batching: queue requests, concatenate along dim 0, run off the loop, split back.

One dispatcher coroutine forms batches and ``workers`` threads run them (onnxruntime releases
the GIL and uses its own intra-op threads). A batch is formed only when a worker is free, so
while all workers are busy new requests queue up and the next batch fills itself under load;
otherwise a batch may wait for company, at most ``max_delay`` after its oldest request, for as
long as :class:`DelayPolicy` finds it useful (adaptive: only when more rows are expected to
arrive within the wait, so a lone caller never waits; fixed: the whole ``max_delay``). Two
workers let the next batch compute while the previous one's responses are encoded and its
callers send their next requests. Requests whose non-batch shapes or dtypes differ never share a
batch. The queue is bounded: :class:`QueueFull` lets the server answer 503 with Retry-After.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
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


class DelayPolicy:
    """How long a batch that is not full waits for company: a small pure class (clock injected).

    Fixed (``adaptive=False``): until ``max_delay_s`` after its oldest request, as before.
    Adaptive (the default): ``max_delay_s`` is only the upper bound, and a wait must pay for
    itself. Two measurements decide:

    - the *company rate*: rows that arrive while other rows are pending (queued or being run),
      per second of such busy time, over the last ``window_s`` of busy time (both sums decay on
      the busy clock, so idle gaps do not dilute them). A lone closed-loop caller (c=1) never
      sends while its request is pending, so its company rate is 0 and it never waits;
    - the model's latency per batch size (EWMA), split into a per-call cost ``a`` (the *merge
      saving*: running newcomers in this call rather than the next saves one call) and a
      per-row cost ``c``, from size 1 and the largest size seen.

    Waiting ``w`` for newcomers makes each of the ``r`` queued rows later by ``w`` (and by the
    newcomers' rows in its call) and each newcomer earlier by ``a - w``; the summed latency
    drops only while ``w < a - r * (c + 1 / rate)`` (:meth:`worth_waiting`), counted from when
    the batch could first have run. A batch waits only as long as the smallest of that, the
    bound, the time its missing rows take to arrive at the company rate and (when another
    worker's batch runs) the time until the model is expected to be free; only if at least one
    row is expected within it; and not once the stream went quiet for ``quiet_gaps`` mean gaps
    (a closed loop of 8 callers cannot fill a batch of 32: the wait ends soon after the 8th
    arrives). Models whose time goes to their rows, and batches with many rows queued already
    (high load, where batches fill by themselves), thus run at once as with no delay; a model
    with a large per-call cost at moderate load gets full batches.
    """

    def __init__(
        self,
        *,
        max_delay_s: float,
        max_batch_size: int,
        adaptive: bool = True,
        window_s: float = 0.02,
        quiet_gaps: float = 3.0,
        alpha: float = 0.2,
    ) -> None:
        self.max_delay_s = max(0.0, max_delay_s)
        self.max_batch_size = max(1, max_batch_size)
        self.adaptive = adaptive
        self.window_s = window_s
        self.quiet_gaps = quiet_gaps
        self.alpha = alpha
        self.pending = 0
        """Rows submitted and not finished (queued or being run)."""
        self._company = 0.0
        self._busy = 0.0
        self._last = 0.0
        self._last_arrival = 0.0
        self._latency: dict[int, float] = {}
        self._per_row: float | None = None

    # -- measurements -------------------------------------------------------------------------

    def _advance(self, now: float) -> None:
        """Age the company and busy-time sums by the busy time since the last event."""
        elapsed = now - self._last
        self._last = max(self._last, now)
        if self.pending > 0 and elapsed > 0:
            keep = math.exp(-elapsed / self.window_s)
            self._company *= keep
            self._busy = self._busy * keep + self.window_s * (1.0 - keep)

    def arrived(self, now: float, rows: int) -> None:
        """A request of ``rows`` rows was queued at ``now``."""
        self._advance(now)
        if self.pending > 0:
            self._company += rows
        self.pending += rows
        self._last_arrival = now

    def finished(self, now: float, rows: int) -> None:
        """``rows`` rows left the runtime (answered, failed or abandoned)."""
        self._advance(now)
        self.pending = max(0, self.pending - rows)

    def ran(self, rows: int, seconds: float) -> None:
        """A model call over ``rows`` rows took ``seconds``."""
        old = self._latency.get(rows)
        self._latency[rows] = seconds if old is None else old + self.alpha * (seconds - old)
        per_row = seconds / max(1, rows)
        self._per_row = (
            per_row
            if self._per_row is None
            else self._per_row + self.alpha * (per_row - self._per_row)
        )

    def company_rate(self) -> float:
        """Rows per second arriving while others are pending (0 until there is evidence)."""
        return self._company / self._busy if self._busy > 0 else 0.0

    def _split(self) -> tuple[float, float] | None:
        """The model's latency as (per call, per row), from size 1 and the largest size seen
        (``None`` until both were measured)."""
        one = self._latency.get(1)
        larger = max((size for size in self._latency if size > 1), default=0)
        if one is None or not larger:
            return None
        per_row = max(0.0, (self._latency[larger] - one) / (larger - 1))
        return max(0.0, one - per_row), per_row

    def merge_saving(self) -> float:
        """Model time saved by running newcomers in this call rather than the next one: the
        per-call part of the latency (0 until sizes 1 and above 1 were both measured)."""
        split = self._split()
        return 0.0 if split is None else split[0]

    def worth_waiting(self, queued_rows: int, rate: float) -> float:
        """The longest total wait that lowers the summed latency of the queued rows and the
        newcomers: ``a - r * (c + 1 / rate)`` for per-call cost ``a``, per-row cost ``c`` and
        ``r`` queued rows. Waiting ``w`` for ``rate * w`` newcomers makes each of the ``r``
        queued rows later by ``w`` plus the newcomers' rows in its call, and each newcomer
        earlier by ``a - w``; with many rows queued no wait pays."""
        split = self._split()
        if split is None or rate <= 0:
            return 0.0
        per_call, per_row = split
        return per_call - queued_rows * (per_row + 1.0 / rate)

    def expected_latency(self, rows: int) -> float:
        """Expected seconds of a model call over ``rows`` rows (0 before any was measured)."""
        known = self._latency.get(rows)
        if known is not None:
            return known
        return 0.0 if self._per_row is None else self._per_row * rows

    # -- the decision -------------------------------------------------------------------------

    def wait(
        self,
        now: float,
        queued_rows: int,
        oldest: float,
        since: float | None = None,
        busy_until: float = 0.0,
    ) -> float:
        """Seconds the batch of ``queued_rows`` whose oldest request came at ``oldest`` should
        still wait for company before it runs (0: run now). ``since``: when it could first have
        run (a worker free and a request queued; the merge saving counts from there; default
        ``now``). ``busy_until``: when the model is expected to be free (0 or the past: now)."""
        need = self.max_batch_size - queued_rows
        bound = oldest + self.max_delay_s - now
        if need <= 0 or bound <= 0:
            return 0.0
        if not self.adaptive:
            return bound
        self._advance(now)
        rate = self.company_rate()
        if rate <= 0:
            return 0.0
        start = now if since is None else min(since, now)
        useful = min(bound, need / rate, start + self.worth_waiting(queued_rows, rate) - now)
        if busy_until > now:
            useful = min(useful, busy_until - now)
        if rate * useful < 1.0:
            return 0.0  # not even one more row is expected within the useful wait
        quiet = self._last_arrival + self.quiet_gaps / rate - now
        return max(0.0, min(useful, quiet))


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
        adaptive: bool = True,
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
        self._sizes: collections.deque[int] = collections.deque(maxlen=100)
        self.policy = DelayPolicy(
            max_delay_s=self.max_delay_s, max_batch_size=self.max_batch_size, adaptive=adaptive
        )
        self._busy_until: dict[int, float] = {}

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (not counting the batch being run)."""
        return len(self._queue)

    @property
    def mean_batch_size(self) -> float:
        """Achieved batch size: mean rows per model call over the last 100 batches (0 before
        any)."""
        return sum(self._sizes) / len(self._sizes) if self._sizes else 0.0

    @property
    def batch_fill(self) -> float:
        """Mean rows-per-batch / max_batch_size over recent batches (0 before any)."""
        if not self._sizes:
            return 0.0
        return sum(min(1.0, s / self.max_batch_size) for s in self._sizes) / len(self._sizes)

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
        self.policy.arrived(item.enqueued, rows)
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
        live = [item for item in taken if not item.future.done()]
        abandoned = rows - sum(item.rows for item in live)
        if abandoned:
            self.policy.finished(time.monotonic(), abandoned)
        return live

    async def _dispatch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            while not self._queue:
                await self._wait(None)
            first = self._queue[0]
            since = time.monotonic()
            while True:
                queued = self._rows_by_key.get(first.key, 0)
                busy_until = max(self._busy_until.values(), default=0.0)
                wait = self.policy.wait(time.monotonic(), queued, first.enqueued, since, busy_until)
                if wait <= 0:
                    break
                await self._wait(wait)
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
        started = time.monotonic()
        token = id(batch)
        self._busy_until[token] = started + self.policy.expected_latency(size)
        try:
            outputs = await loop.run_in_executor(self._executor, self._run_batch, batch)
            self.policy.ran(size, time.monotonic() - started)
        except Exception as exc:
            log.exception("batch of %d requests failed", len(batch))
            error = BatchError(f"inference failed: {exc}")
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            return
        finally:
            self.in_flight -= size
            del self._busy_until[token]
            self.policy.finished(time.monotonic(), size)
            self._slots.release()
        self.batches += 1
        self.rows += size
        self._sizes.append(size)
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
