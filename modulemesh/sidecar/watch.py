"""Background watch of the runtime: readiness (``/v2/health/ready``) and ``/stats``.

The pod's readiness follows this (``/readyz``). Failed proxied requests are a signal too:
:meth:`RuntimeWatch.unreachable` marks the runtime not ready at once and wakes the poller, so
readiness drops on the first failed request rather than at the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from modulemesh.sidecar.health import RuntimeInfo
from modulemesh.sidecar.upstream import Pool, UpstreamError

__all__ = ["RuntimeWatch"]

_log = logging.getLogger("modulemesh.sidecar")


class RuntimeWatch:
    """Polls the runtime every ``interval`` seconds and keeps :class:`RuntimeInfo` current."""

    def __init__(self, pool: Pool, info: RuntimeInfo, interval: float) -> None:
        self._pool = pool
        self._info = info
        self._interval = interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start polling in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def unreachable(self, reason: str) -> None:
        """A proxied request could not reach the runtime: not ready until a poll says so."""
        if self._info.ready is not False:
            _log.warning("runtime marked not ready: %s", reason)
        self._info.ready = False
        self._info.reason = f"runtime unreachable: {reason}"
        self._wake.set()

    async def poll(self) -> None:
        """One readiness + stats poll."""
        info = self._info
        timeout = max(self._interval, 1.0)
        try:
            status, body = await self._pool.get("/v2/health/ready", timeout=timeout)
        except UpstreamError as exc:
            info.ready, info.reason = False, f"runtime unreachable: {exc}"
            return
        if status != 200:
            detail = _error_text(body)
            info.ready = False
            info.reason = f"runtime not ready ({status}{': ' + detail if detail else ''})"
            return
        was_ready = info.ready
        info.ready, info.reason = True, ""
        if was_ready is not True:
            _log.info("runtime ready")
        with contextlib.suppress(UpstreamError):
            status, body = await self._pool.get("/stats", timeout=timeout)
            if status == 200:
                _apply_stats(info, body)

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except Exception:  # keep watching whatever happens
                _log.exception("runtime poll failed")
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            if self._wake.is_set():
                await asyncio.sleep(min(0.1, self._interval))  # debounce bursts of failures


def _error_text(body: bytes) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    return str(data.get("error", "")) if isinstance(data, dict) else ""


def _apply_stats(info: RuntimeInfo, body: bytes) -> None:
    try:
        stats = json.loads(body)
    except ValueError:
        return
    if not isinstance(stats, dict):
        return
    if isinstance(stats.get("queueDepth"), int):
        info.queue_depth = stats["queueDepth"]
    if isinstance(stats.get("inFlight"), int):
        info.in_flight = stats["inFlight"]
    fill = stats.get("batchFill")
    if isinstance(fill, int | float) and not isinstance(fill, bool):
        info.batch_fill = round(float(fill), 4)
    size = stats.get("meanBatchSize")
    if isinstance(size, int | float) and not isinstance(size, bool):
        info.mean_batch_size = round(float(size), 3)
    if isinstance(stats.get("provider"), str):
        info.provider = stats["provider"]
    if isinstance(stats.get("modelVersion"), str):
        info.model_version = stats["modelVersion"]
