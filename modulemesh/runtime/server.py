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
from typing import TYPE_CHECKING

from modulemesh.httpserver import Server, ServerConfig
from modulemesh.runtime import model as model_module
from modulemesh.runtime import source
from modulemesh.runtime.app import RuntimeApp, RuntimeState, default_name
from modulemesh.runtime.batching import Batcher
from modulemesh.runtime.config import RuntimeConfig

if TYPE_CHECKING:
    from modulemesh.grpc.server import GrpcServer

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
                cpu_fallback=config.cpu_fallback == "allow",
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
            adaptive=config.adaptive_delay,
        )
        batcher.start()
        state.extra_parameters = {
            "max_batch_size": max_batch,
            "max_delay_ms": config.max_delay_ms,
            "adaptive_delay": config.adaptive_delay,
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


async def drain(state: RuntimeState, timeout: float, forced: asyncio.Event) -> None:
    """Wait for in-flight requests and queued batches (bounded by ``timeout``, cut short by a
    second signal). New requests meanwhile get 503 from the app, so the port stays open:
    a client that connects during the drain learns why instead of being refused."""
    deadline = time.monotonic() + timeout
    batcher = state.batcher
    while (
        time.monotonic() < deadline
        and not forced.is_set()
        and (state.active > 0 or (batcher is not None and batcher.queue_depth > 0))
    ):
        await asyncio.sleep(0.02)
    if state.active > 0:
        log.warning("drain ended with %d requests still in flight", state.active)
    else:
        log.info("drained; exiting")


def grpc_companion(app: RuntimeApp, config: RuntimeConfig) -> GrpcServer | None:
    """The runtime's gRPC endpoint, answered by the HTTP app (one inference path), bounded
    like HTTP bodies by ``--max-body-bytes``; ``None`` when it has none."""
    if config.grpc_uds is None and not config.grpc_port:
        return None
    # grpcio is imported only by a runtime that serves gRPC
    from modulemesh.grpc.server import GrpcServer, OipService, listen_address

    address = (
        f"unix:{config.grpc_uds}"
        if config.grpc_uds is not None
        else listen_address(config.host, config.grpc_port)
    )
    return GrpcServer(
        [OipService(app).handler()], address, max_message_bytes=config.max_body_bytes, grace=1.0
    )


async def serve(config: RuntimeConfig, on_started: Callable[[Server], None] | None = None) -> int:
    """Run the runtime on :mod:`modulemesh.httpserver` until drained; returns the exit code."""
    state = RuntimeState(name=config.name or default_name(config.model))
    app = RuntimeApp(config, state)
    # The app enforces its own body limit (413 naming --max-body-bytes) while it reads.
    server = Server(
        app,
        ServerConfig(
            host=config.host,
            port=config.port,
            uds=config.uds,
            max_body=None,
            drain_timeout=1.0,
            body_timeout=config.body_timeout,
        ),
    )
    try:
        await server.start()
    except (RuntimeError, OSError) as exc:
        log.error("runtime did not start on %s: %s", server.address, exc)
        return 3
    log.info("listening on %s", server.address)
    grpc_server = grpc_companion(app, config)
    if grpc_server is not None:
        try:
            await grpc_server.start()
        except OSError as exc:
            log.error("runtime did not start: %s", exc)
            await server.shutdown()
            return 3
    loader = asyncio.create_task(load_model(state, config), name="load-model")
    stop, forced = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("second %s: exiting now", sig.name)
            forced.set()
            return
        log.info("%s received: draining (%d in flight)", sig.name, state.active)
        state.draining = True
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    if on_started is not None:
        on_started(server)
    try:
        await stop.wait()
        await drain(state, config.drain_timeout, forced)
        if grpc_server is not None:
            await asyncio.gather(server.shutdown(), grpc_server.stop())
        else:
            await server.shutdown()
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        loader.cancel()
        if state.batcher is not None:
            await state.batcher.close()
    return 0
