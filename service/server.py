"""`serve`: one process, or a master with N workers sharing the port through SO_REUSEPORT.

Shutdown: SIGTERM (or SIGINT) stops accepting, lets in-flight requests finish for up to
SHUTDOWN_GRACE seconds, closes the pools, and then the master stops the embedded servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import tempfile
import time
from collections import deque
from collections.abc import Iterator

from aiohttp import web

from .app import create_app
from .capacity import refuse_oversized_pools
from .connections import raise_open_files_limit, watch_connections
from .listen import ListenError, check_listenable, describe, listen_url
from .logs import configure_logging
from .runtime import announced, servers
from .settings import Settings
from .web.keys import CONNECTIONS, DRAIN, SETTINGS

log = logging.getLogger("service.server")
# seconds SIGTERM leaves in-flight requests to finish
SHUTDOWN_GRACE = 10.0
# a worker that dies this often within CRASH_WINDOW seconds means the pool cannot run: stop
CRASH_LIMIT = 5
CRASH_WINDOW = 30.0
# objects a worker makes between two young collections (CPython's default: 700)
GC_YOUNG_THRESHOLD = 20_000


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def _master_gone(master_pid: int) -> None:
    """Returns when this worker's master has disappeared (re-parented), so a worker never outlives it."""
    while os.getppid() == master_pid:
        await asyncio.sleep(1.0)
    log.warning("master process gone; stopping")


async def _serve(app: web.Application, host: str, port: int, reuse_port: bool, master_pid: int | None) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Ctrl-C reaches the whole process group: a worker leaves SIGINT to its master, which sends SIGTERM
    for signum in (signal.SIGTERM,) if master_pid else (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)  # a repeated signal changes nothing
    drain = app[DRAIN]
    settings = app[SETTINGS]
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=SHUTDOWN_GRACE,
                           keepalive_timeout=settings.keepalive_timeout_seconds)
    await runner.setup()
    # what the worker has built by now (routes, schemas, pools) lives as long as it does: out of the
    # cyclic collector's way, so that the full collections that large requests (a batch of 1,000
    # links) set off walk their own objects, not the whole app's; this halves a batch replay's CPU
    gc.collect()
    gc.freeze()
    # a young collection every 20,000 new objects, not 700: a batch of 1,000 new links set off some 30 of
    # them at the default (a tenth of its CPU), walking mostly the batch's own objects, alive until it is
    # answered; garbage in cycles waits longer, a few MB at most
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    watcher = asyncio.create_task(watch_connections(runner, app[CONNECTIONS], settings.header_timeout_seconds,
                                                    raise_open_files_limit()))
    try:
        site = web.TCPSite(runner, host, port, reuse_port=reuse_port)
        try:
            await site.start()
        except OSError as exc:  # taken since serve() checked it
            raise ListenError(describe(exc, host, port)) from None
        waits: list[asyncio.Task[object]] = [asyncio.create_task(stop.wait())]
        if master_pid is not None:
            waits.append(asyncio.create_task(_master_gone(master_pid)))
        _, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        log.info("draining", extra={"in_flight": drain.active})
        await site.stop()  # stop accepting; connections in use stay open
        if not await drain.wait(SHUTDOWN_GRACE):
            log.warning("requests still in flight at the end of the grace period", extra={"in_flight": drain.active})
    finally:
        watcher.cancel()
        await runner.cleanup()  # closes idle connections, then the pools (cleanup contexts)


def run_worker(settings: Settings, host: str, port: int, reuse_port: bool, master_pid: int | None = None) -> None:
    """Serve until SIGTERM (or SIGINT when alone), then drain in-flight requests and close resources."""
    configure_logging(settings.log_level, settings.log_format)
    if master_pid is not None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the loop's handlers are in place
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(_serve(create_app(settings), host, port, reuse_port, master_pid))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@contextlib.contextmanager
def shared_metrics_dir() -> Iterator[str]:
    """A fresh PROMETHEUS_MULTIPROC_DIR for the workers of this run, removed when they are gone."""
    path = tempfile.mkdtemp(prefix="sls-metrics-")
    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path  # spawned workers inherit it before importing prometheus
    try:
        yield path
    finally:
        if previous is None:
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        else:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous
        shutil.rmtree(path, ignore_errors=True)


class Supervisor:
    """Runs N workers, replaces one that dies, and on SIGTERM/SIGINT stops them all, once each."""

    def __init__(self, settings: Settings, host: str, port: int, workers: int, metrics_dir: str) -> None:
        self.args = (settings, host, port, True, os.getpid())
        self.count = workers
        self.metrics_dir = metrics_dir
        self.ctx = multiprocessing.get_context("spawn")
        self.procs: list[multiprocessing.process.BaseProcess] = []
        self.signalled: set[int] = set()
        self.stopping = False
        self.crashes: deque[float] = deque(maxlen=CRASH_LIMIT)

    def _start(self) -> multiprocessing.process.BaseProcess:
        proc = self.ctx.Process(target=run_worker, args=self.args, name="sls-worker")
        proc.start()
        return proc

    def _stop_all(self, *_: object) -> None:
        self.stopping = True
        for proc in self.procs:
            if proc.pid and proc.pid not in self.signalled and proc.is_alive():
                self.signalled.add(proc.pid)
                os.kill(proc.pid, signal.SIGTERM)

    def _crash_loop(self) -> bool:
        now = time.monotonic()
        self.crashes.append(now)
        return len(self.crashes) == CRASH_LIMIT and now - self.crashes[0] < CRASH_WINDOW

    def _reap(self, proc: multiprocessing.process.BaseProcess) -> None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(proc.pid, self.metrics_dir)  # its live gauges leave the scrape

    def run(self) -> int:
        """Supervise until told to stop; answers the exit code (1 if the workers kept crashing)."""
        signal.signal(signal.SIGTERM, self._stop_all)
        signal.signal(signal.SIGINT, self._stop_all)
        failed = False
        for _ in range(self.count):
            self.procs.append(self._start())
        while not self.stopping:
            multiprocessing.connection.wait([p.sentinel for p in self.procs], timeout=0.5)
            for i, proc in enumerate(self.procs):
                if self.stopping or proc.is_alive():
                    continue
                self._reap(proc)
                if self._crash_loop():
                    log.error("workers keep exiting; stopping", extra={"exitcode": proc.exitcode})
                    failed = True
                    self._stop_all()
                    break
                log.warning("worker exited; starting another", extra={"exitcode": proc.exitcode})
                self.procs[i] = self._start()
        self._stop_all()  # workers started while the signal arrived get theirs too
        deadline = time.monotonic() + SHUTDOWN_GRACE + 5
        for proc in self.procs:
            proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.error("worker did not stop in time; killing it", extra={"pid": proc.pid})
                proc.kill()
                proc.join(timeout=5)
        return 1 if failed else 0


def serve(settings: Settings, host: str, port: int, workers: int) -> None:
    """Start the servers (embedded ones once, for every worker), migrate the database, then serve.

    ListenError (one line to show) when host:port cannot be listened on: checked before anything starts.
    """
    configure_logging(settings.log_level, settings.log_format)
    check_listenable(host, port)
    settings = settings.listening_at(listen_url(host, port))
    with servers(settings, migrate=True) as ready, announced(settings):
        refuse_oversized_pools(ready, workers)
        log.info("serving", extra={"host": host, "port": port, "workers": workers, "url": ready.public_base_url})
        if workers <= 1:
            run_worker(ready, host, port, reuse_port=False)
            return
        with shared_metrics_dir() as metrics_dir:
            code = Supervisor(ready, host, port, workers, metrics_dir).run()
        log.info("stopped", extra={"workers": workers})
    if code:
        raise SystemExit(code)
