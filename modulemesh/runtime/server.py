"""Process life cycle: listen at once, load + warm up in the background, drain on SIGTERM.

The server answers ``live`` from the first moment and ``ready`` only once the model is
loaded and warmed up, so a slow download or a broken model shows up as "not ready, because
..." rather than a crash loop. On SIGTERM (or SIGINT) it stops taking requests (503), lets
in-flight ones finish (bounded by ``--drain-timeout``) and exits 0; a second signal forces it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from types import FrameType

import uvicorn

from modulemesh.runtime import model as model_module
from modulemesh.runtime import source
from modulemesh.runtime.app import RuntimeApp, RuntimeState, default_name
from modulemesh.runtime.batching import Batcher
from modulemesh.runtime.config import RuntimeConfig

log = logging.getLogger("modulemesh.runtime")


async def load_model(state: RuntimeState, config: RuntimeConfig) -> None:
    """Resolve, load and warm up the model off the loop; record the failure reason if any."""
    loop = asyncio.get_running_loop()
    options = source.SourceOptions(
        sha256=config.sha256,
        cache_dir=config.cache_dir,
        ca_bundle=config.ca_bundle,
        allow_insecure_http=config.allow_insecure_http,
        timeout=config.download_timeout,
    )
    try:
        state.reason = "resolving model source"
        path = await loop.run_in_executor(None, source.resolve, config.model, options)
        state.reason = "loading model"

        def _load() -> model_module.Model:
            return model_module.load(
                path,
                name=state.name,
                version=config.model_version,
                provider=config.provider,
                intra_op_threads=config.intra_op_threads,
                inter_op_threads=config.inter_op_threads,
                spinning=config.spinning,
                device_id=config.device_id,
            )

        model = await loop.run_in_executor(None, _load)
        max_batch = config.max_batch_size if config.batching and model.batchable else 1
        if config.batching and not model.batchable:
            log.warning("model %s has no dynamic batch dimension; batching is off", model.name)
        state.reason = "warming up"
        started = time.monotonic()
        await loop.run_in_executor(None, model.warm_up, max_batch, config.warmup_runs)
        log.info(
            "model %s warmed up with a batch of %d in %.3fs",
            model.name,
            max_batch,
            time.monotonic() - started,
        )
        batcher = Batcher(
            model.run,
            max_batch_size=max_batch,
            max_delay_s=config.max_delay_ms / 1000.0,
            max_queue=config.max_queue,
            workers=config.batch_workers,
        )
        batcher.start()
        state.extra_parameters = {
            "max_batch_size": max_batch,
            "max_delay_ms": config.max_delay_ms,
            "max_queue": config.max_queue,
            "batch_workers": config.batch_workers,
            "batching": max_batch > 1,
        }
        state.batcher = batcher
        state.model = model
        state.reason = ""
        log.info("model %s version %s ready on %s", model.name, model.version, model.provider)
    except (source.SourceError, model_module.ModelError) as exc:
        state.reason = str(exc)
        log.error("model %s failed to load: %s", state.name, exc)
    except Exception as exc:
        state.reason = f"{type(exc).__name__}: {exc}"
        log.exception("model %s failed to load", state.name)


class DrainingServer(uvicorn.Server):
    """uvicorn server whose first SIGTERM/SIGINT drains instead of closing sockets at once."""

    def __init__(self, config: uvicorn.Config, state: RuntimeState, drain_timeout: float) -> None:
        super().__init__(config)
        self.state = state
        self.drain_timeout = drain_timeout

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not appending to _captured_signals: uvicorn would re-raise it on exit (exit != 0).
        if self.state.draining:
            log.warning("second %s: exiting now", signal.Signals(sig).name)
            self.should_exit = True
            self.force_exit = True
            return
        log.info(
            "%s received: draining (%d in flight)", signal.Signals(sig).name, self.state.active
        )
        self.state.draining = True

    async def watch_drain(self) -> None:
        """Once draining, wait for in-flight requests (bounded), then let uvicorn exit."""
        while not self.should_exit and not self.state.draining:
            await asyncio.sleep(0.05)
        deadline = time.monotonic() + self.drain_timeout
        batcher = self.state.batcher
        while time.monotonic() < deadline and (
            self.state.active > 0 or (batcher is not None and batcher.queue_depth > 0)
        ):
            await asyncio.sleep(0.02)
        if self.state.active > 0:
            log.warning("drain timeout: %d requests still in flight", self.state.active)
        else:
            log.info("drained; exiting")
        self.should_exit = True


async def serve(
    config: RuntimeConfig, on_started: Callable[[DrainingServer], None] | None = None
) -> int:
    """Run the runtime until drained; returns the exit code."""
    state = RuntimeState(name=config.name or default_name(config.model))
    app = RuntimeApp(config, state)
    uv_config = uvicorn.Config(
        app,
        host=config.host,
        port=config.port,
        http="httptools",
        loop="none",
        lifespan="off",
        access_log=False,
        proxy_headers=False,  # loopback behind the sidecar: no X-Forwarded-* to trust
        server_header=False,
        log_level=config.log_level,
        timeout_graceful_shutdown=max(1, int(config.drain_timeout)),
    )
    server = DrainingServer(uv_config, state, config.drain_timeout)
    loader = asyncio.create_task(load_model(state, config), name="load-model")
    watcher = asyncio.create_task(server.watch_drain(), name="drain")
    if on_started is not None:
        on_started(server)
    try:
        await server.serve()
    finally:
        for task in (loader, watcher):
            task.cancel()
        if state.batcher is not None:
            await state.batcher.close()
    return 0
