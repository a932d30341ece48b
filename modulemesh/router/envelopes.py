"""The latest health envelope of every module, learnt for free from response headers.

Every module response carries ``x-modulemesh-envelope``; the raw value is stored as is (no
parsing on the hot path) and parsed only when someone reads it. Modules that got no traffic
for ``poll_interval`` are polled at ``GET /envelope``. An envelope older than ``stale_after``
(by its own timestamp) is reported as ``Unknown``: the router does not act on old news. A poll
that finds a module Healthy is reported to ``on_healthy`` with the time it was sent (the
circuit breaker ends an ejection that began before it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import replace
from typing import Any

from modulemesh.envelope import EnvelopeError, HealthEnvelope, State, parse_header

__all__ = ["EnvelopeStore", "ModuleEnvelope"]

_log = logging.getLogger("modulemesh.router")

Fetch = Callable[[str], Awaitable[tuple[int, bytes]]]
"""GET ``/envelope`` of a module: status and body."""

OnHealthy = Callable[[str, float], None]
"""``on_healthy(module, sent)``: a poll sent at monotonic time ``sent`` found it Healthy."""


class ModuleEnvelope:
    """What the router knows about one module's health."""

    __slots__ = ("_parsed", "_polled", "_raw", "error", "module", "received", "source")

    def __init__(self, module: str) -> None:
        self.module = module
        self._raw: bytes | None = None
        self._parsed: HealthEnvelope | None = None
        self._polled: HealthEnvelope | None = None
        self.received = 0.0
        self.source = ""
        self.error = ""

    def set_header(self, raw: bytes) -> None:
        """Hot path: keep the raw header value; parse later, only if it changed."""
        self.received = time.monotonic()
        if raw != self._raw:
            self._raw = raw
            self._parsed = None
        self.source = "header"
        self.error = ""

    def set_envelope(self, envelope: HealthEnvelope) -> None:
        """A full envelope from polling."""
        self._raw = None
        self._parsed = envelope
        self._polled = envelope
        self.received = time.monotonic()
        self.source = "poll"
        self.error = ""

    def latest(self) -> HealthEnvelope | None:
        """The latest envelope as received, or None if none yet."""
        if self._parsed is None and self._raw is not None:
            parsed = parse_header(self._raw)
            polled = self._polled
            if parsed is not None and polled is not None:
                # the compact header omits the JSON-only fields; keep them from the last poll
                parsed = replace(
                    parsed,
                    model_version=polled.model_version,
                    provider=polled.provider,
                    window_seconds=polled.window_seconds,
                )
            self._parsed = parsed
        return self._parsed

    def current(self, stale_after: float) -> HealthEnvelope:
        """The envelope to act on: Unknown when missing, unreadable or older than stale_after."""
        env = self.latest()
        if env is None:
            reason = self.error or "no envelope received yet"
            return HealthEnvelope(module=self.module, reason=reason)
        age = time.time() - env.timestamp
        if age > stale_after:
            return env.with_state(State.UNKNOWN, f"stale: last envelope is {age:.1f}s old")
        return env


class EnvelopeStore:
    """Envelopes of all modules of the graph, plus the idle-module poller."""

    def __init__(
        self,
        modules: Iterable[str],
        stale_after: float = 30.0,
        *,
        on_healthy: OnHealthy | None = None,
    ) -> None:
        self.modules = {m: ModuleEnvelope(m) for m in modules}
        self.stale_after = stale_after
        self.on_healthy = on_healthy
        self._task: asyncio.Task[None] | None = None

    def __getitem__(self, module: str) -> ModuleEnvelope:
        return self.modules[module]

    def state(self, module: str, stale_after: float | None = None) -> HealthEnvelope:
        """The current envelope of ``module`` (see :meth:`ModuleEnvelope.current`)."""
        return self.modules[module].current(stale_after or self.stale_after)

    def start(self, fetch: Fetch, interval: float) -> None:
        """Begin polling modules that have been quiet for ``interval`` seconds."""
        self._task = asyncio.get_running_loop().create_task(self._poll(fetch, interval))

    async def stop(self) -> None:
        """Stop polling."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def poll_once(self, fetch: Fetch, interval: float) -> None:
        """Poll every module not heard from in ``interval`` seconds, concurrently."""
        now = time.monotonic()
        quiet = [m for m in self.modules.values() if now - m.received >= interval]
        if quiet:
            await asyncio.gather(*(self._fetch_one(fetch, m) for m in quiet))

    async def _poll(self, fetch: Fetch, interval: float) -> None:
        while True:
            try:
                await self.poll_once(fetch, interval)
            except Exception:  # never let the poller die
                _log.exception("envelope polling failed")
            await asyncio.sleep(interval)

    async def _fetch_one(self, fetch: Fetch, entry: ModuleEnvelope) -> None:
        sent = time.monotonic()
        try:
            status, body = await fetch(entry.module)
            if status != 200:
                raise EnvelopeError(f"GET /envelope answered {status}")
            envelope = HealthEnvelope.from_json(body)
            entry.set_envelope(envelope)
        except Exception as exc:
            entry.error = f"envelope poll failed: {exc}"
            entry.received = time.monotonic()
            entry._parsed = None
            entry._raw = None
            entry.source = "poll"
            return
        if envelope.state is State.HEALTHY and self.on_healthy is not None:
            self.on_healthy(entry.module, sent)

    def snapshot(self) -> dict[str, Any]:
        """Every module's envelope as JSON-able data, for ``GET /envelopes``."""
        now = time.monotonic()
        out: dict[str, Any] = {}
        for name, entry in self.modules.items():
            env = entry.current(self.stale_after)
            out[name] = {
                "envelope": env.to_dict(),
                "source": entry.source or None,
                "ageSeconds": None if not entry.received else round(now - entry.received, 3),
                "error": entry.error or None,
            }
        return out
