"""The supervisor of ``meshproxy run --concurrency N``: N worker processes run as one sidecar.

Owns the workers' lives and what the sidecar has once. It resolves and holds the listener
addresses (``addresses.py``), starts N workers (``worker.py``) with the configuration minus the
admin and ``dynamic_resources``, and restarts one that ended unasked, after ``restart.Backoff``,
counting ``server.worker_restarts``. It runs the admin (``admin.py``) and the one ADS stream:
the ``AdsClient`` hands it each assembled configuration (``apply``), it binds the new addresses
(refused: the update is NACKed, no worker saw it), then forwards the configuration to every
worker, which applies it as a single-process proxy would. A worker that fails to apply what
the supervisor accepted is restarted, and starts on that configuration: every worker runs what
was ACKed. Certificates need nothing here: each worker follows the certificate files itself
(the identity agent, in this process, renews them). SIGTERM, SIGINT or ``/quitquitquit``
reach every worker as SIGTERM (a second signal is forwarded too: ``sidecar/lifecycle.py`` rule
5), each drains in the sidecar order of ``server.py``, and the supervisor ends once all have.
Must not be imported by the single-process path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import signal
import socket
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from meshproxy.config import model
from meshproxy.config.model import Config
from meshproxy.errors import ConfigError
from meshproxy.sidecar.lifecycle import Termination
from meshproxy.stats import Store
from meshproxy.workers.addresses import Reservations
from meshproxy.workers.admin import WorkersAdmin
from meshproxy.workers.channel import Channel, ChannelError, Start
from meshproxy.workers.restart import Backoff

if TYPE_CHECKING:
    from meshproxy.xds.client import AdsClient

log = logging.getLogger("meshproxy.workers")

# Seconds a worker is given to start serving, and to apply a configuration.
START_TIMEOUT = 60.0
APPLY_TIMEOUT = 60.0


@dataclasses.dataclass(slots=True, eq=False)
class Worker:
    index: int
    backoff: Backoff = dataclasses.field(default_factory=Backoff)
    process: asyncio.subprocess.Process | None = None
    channel: Channel | None = None
    # The configuration this worker runs (the very object sent: compared by identity).
    applied: Config | None = None
    serving: bool = False
    restarts: int = 0
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid


class Supervisor:
    def __init__(
        self,
        config: Config,
        concurrency: int,
        *,
        termination: Termination | None = None,
        log_level: str = "info",
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.termination = termination or Termination()
        self.log_level = log_level
        self.rng = rng or random.Random()
        self.ready = config.dynamic is None  # with xDS: the ADS client sets it
        self.draining = False
        self.store = Store()  # the process scope only (live, draining, worker_restarts)
        self.reservations = Reservations()
        self.workers = [Worker(i) for i in range(concurrency)]
        self.forwarded = config  # what the workers are to run (``_for_workers``)
        self.xds: AdsClient | None = None
        self.admin = WorkersAdmin(self)
        self.stopped = asyncio.Event()
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self._shutdown: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Reserve the listener addresses, start the admin and every worker (raises OSError,
        everything stopped again, when an address cannot be bound or a worker cannot start)."""
        try:
            self.config = self.reservations.resolve(self.config)
            self.forwarded = _for_workers(self.config)
            admin = self.config.admin.address
            if admin is not None:
                await self.admin.start(admin.host, admin.port)
            failures = await asyncio.gather(*(self._spawn(w) for w in self.workers))
            failed = [
                f"worker {w.index}: {why}" for w, why in zip(self.workers, failures, strict=True) if why
            ]
            if failed:
                raise OSError("; ".join(failed))
        except OSError:
            await self.close()
            raise
        loop = asyncio.get_running_loop()
        self._watchers = [loop.create_task(self._watch(w)) for w in self.workers]
        self.store.server["live"] = 1
        if self.config.dynamic is not None:
            from meshproxy.xds.client import AdsClient  # grpc only when the bootstrap asks for xDS

            self.xds = AdsClient(self, self.config.dynamic, rng=self.rng)
            self.store.xds = self.xds.stats
            self.xds.start()

    def listener_addresses(self) -> dict[str, tuple[str, int]]:
        return {ln.name: (ln.address.host, ln.address.port) for ln in self.config.listeners}

    # ------------------------------------------------------------------ configuration

    async def apply(self, config: Config) -> None:
        """The ADS client accepted ``config``: bind its new addresses (raises ConfigError,
        changing nothing, when one cannot be bound), then every serving worker applies it."""
        if self.draining:
            return
        try:
            resolved = self.reservations.resolve(config)
        except OSError as exc:
            raise ConfigError([exc.strerror or str(exc)]) from exc
        self.config = resolved
        self.forwarded = _for_workers(resolved)
        await asyncio.gather(*(self._sync(w) for w in self.workers if w.serving))
        self.reservations.keep_only(resolved)

    async def _sync(self, w: Worker) -> None:
        """Bring ``w`` to the current configuration; one that cannot apply it is restarted."""
        async with w.lock:
            while w.serving and w.channel is not None and w.applied is not self.forwarded:
                target = self.forwarded
                try:
                    reply = await w.channel.ask(("apply", target), APPLY_TIMEOUT)
                except ChannelError as exc:
                    reply = ("error", [str(exc)])
                if reply[0] != "ok":
                    log.error(
                        "worker %d could not apply version %s (%s); restarting it",
                        w.index,
                        target.version,
                        "; ".join(reply[1]),
                    )
                    self._signal(w, signal.SIGKILL)
                    return
                w.applied = target

    # ------------------------------------------------------------------ workers

    async def _spawn(self, w: Worker) -> str:
        """Start ``w`` on the current configuration; "" once it serves, else why not."""
        ours, theirs = socket.socketpair()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "meshproxy.workers.worker",
                str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            return f"cannot start a process: {exc}"
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours)
        w.process, w.channel = process, Channel(reader, writer)
        target = self.forwarded
        start = Start(w.index, target, self.termination, self.log_level)
        try:
            reply = await w.channel.ask(start, START_TIMEOUT)
        except ChannelError as exc:
            reply = ("failed", f"ended during start ({exc})")
        if reply[0] != "started":
            self._signal(w, signal.SIGKILL)
            await process.wait()
            return str(reply[1])
        w.applied, w.serving = target, True
        w.backoff.started(asyncio.get_running_loop().time())
        log.info("worker %d serving (pid %d)", w.index, process.pid)
        if self._stopping:  # a signal came while it started
            self._signal(w, signal.SIGTERM)
        await self._sync(w)  # an update may have come while it started
        return ""

    async def _watch(self, w: Worker) -> None:
        """Restart ``w`` whenever it ends unasked, until the supervisor stops."""
        loop = asyncio.get_running_loop()
        while True:
            assert w.process is not None
            code = await w.process.wait()
            w.serving = False
            if w.channel is not None:
                w.channel.close()
            if self._stopping:
                log.info("worker %d (pid %d) ended (exit code %d)", w.index, w.process.pid, code)
                return
            w.restarts += 1
            self.store.server["worker_restarts"] += 1
            delay = w.backoff.delay(loop.time())
            log.error(
                "worker %d (pid %d) ended unasked (exit code %d); restarting in %.2fs",
                w.index,
                w.process.pid,
                code,
                delay,
            )
            while True:
                await asyncio.sleep(delay)
                if self._stopping:
                    return
                why = await self._spawn(w)
                if not why:
                    break
                delay = w.backoff.delay(loop.time())
                log.error("worker %d did not start (%s); retrying in %.2fs", w.index, why, delay)

    @staticmethod
    def _signal(w: Worker, sig: signal.Signals) -> None:
        if w.process is not None and w.process.returncode is None:
            w.process.send_signal(sig)

    async def ask(
        self, request: tuple[Any, ...], timeout: float, workers: Sequence[Worker] | None = None
    ) -> list[tuple[Worker, Any]]:
        """Each serving worker's (of ``workers``, default all) answer to ``request``; those
        that fail to answer within ``timeout`` are left out, and restarted."""
        serving = [w for w in workers or self.workers if w.serving and w.channel is not None]

        async def one(w: Worker) -> Any:
            assert w.channel is not None
            return await w.channel.ask(request, timeout)

        replies = await asyncio.gather(*(one(w) for w in serving), return_exceptions=True)
        out: list[tuple[Worker, Any]] = []
        for w, reply in zip(serving, replies, strict=True):
            if isinstance(reply, BaseException):
                # Its channel is broken (a late answer would answer the next request): a worker
                # that cannot answer within the bound is treated as hung, and restarted.
                log.error("worker %d did not answer %s (%s); restarting it", w.index, request[0], reply)
                self._signal(w, signal.SIGKILL)
            elif reply[0] == "ok":
                out.append((w, reply[1]))
        return out

    def all_serving(self) -> bool:
        """Every worker serves the configuration the supervisor accepted last."""
        return all(w.serving and w.applied is self.forwarded for w in self.workers)

    # ------------------------------------------------------------------ the end

    def terminate(self) -> None:
        """SIGTERM, SIGINT or ``/quitquitquit``: every worker gets SIGTERM (each drains in the
        sidecar order); a later signal is forwarded as well (it ends their holds at once)."""
        self.draining = True
        self.store.server["draining"] = 1
        self._stopping = True
        for w in self.workers:
            self._signal(w, signal.SIGTERM)
        if self._shutdown is None:
            self._shutdown = asyncio.get_running_loop().create_task(self._wait_workers())

    async def _wait_workers(self) -> None:
        await asyncio.gather(*self._watchers)
        await self.close()

    async def close(self) -> None:
        self._stopping = True
        self.store.server["live"] = 0
        if self.xds is not None:
            await self.xds.close()
        for w in self.workers:
            self._signal(w, signal.SIGKILL)  # only those still running after their drain
            if w.process is not None:
                await w.process.wait()
            if w.channel is not None:
                w.channel.close()
        self.admin.close()
        self.reservations.close()
        self.stopped.set()

    async def serve_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.terminate)
        await self.stopped.wait()


def _for_workers(config: Config) -> Config:
    """What a worker runs: no admin (the supervisor's) and no ADS client (the supervisor's)."""
    return dataclasses.replace(config, admin=model.Admin(), dynamic=None)
