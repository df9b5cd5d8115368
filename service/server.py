"""`serve`: one process, or a master with N workers sharing the port through SO_REUSEPORT."""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal

from aiohttp import web

from .app import create_app
from .logs import configure_logging
from .runtime import servers
from .settings import Settings

log = logging.getLogger("service.server")
# seconds SIGTERM leaves in-flight requests to finish
SHUTDOWN_GRACE = 10.0


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run_worker(settings: Settings, host: str, port: int, reuse_port: bool) -> None:
    """Serve until SIGINT/SIGTERM, then drain in-flight requests and close resources."""
    configure_logging(settings.log_level, settings.log_format)
    web.run_app(
        create_app(settings), host=host, port=port, reuse_port=reuse_port, access_log=None,
        shutdown_timeout=SHUTDOWN_GRACE, print=None, loop=_new_loop(), handle_signals=True,
    )


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Start the servers (embedded ones once, for every worker), then serve."""
    configure_logging(settings.log_level, settings.log_format)
    with servers(settings) as ready:
        log.info("serving", extra={"host": host, "port": port, "workers": workers})
        if workers <= 1:
            run_worker(ready, host, port, reuse_port=False)
            return
        ctx = multiprocessing.get_context("spawn")
        procs = [ctx.Process(target=run_worker, args=(ready, host, port, True), daemon=False) for _ in range(workers)]
        stopping = False

        def forward(signum: int, _frame: object) -> None:
            nonlocal stopping
            stopping = True
            for proc in procs:
                if proc.pid and proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        for proc in procs:
            proc.start()
        # a worker that dies is replaced, so one crash doesn't shrink the pool
        while not stopping:
            for i, proc in enumerate(procs):
                proc.join(timeout=0.2)
                if not proc.is_alive() and not stopping:
                    log.warning("worker exited; starting another", extra={"exitcode": proc.exitcode})
                    procs[i] = ctx.Process(target=run_worker, args=(ready, host, port, True))
                    procs[i].start()
        for proc in procs:
            proc.join(timeout=SHUTDOWN_GRACE + 5)
