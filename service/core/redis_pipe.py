"""A lean, auto-pipelining Redis connection for the request gate's calls (EVALSHA, SET).

Why: redis-py's asyncio client costs a few hundred microseconds of CPU per call (a pooled
connection checked out and back, an asyncio stream, a timeout context per read, a general RESP3
parser), and the hot paths make exactly one call per request. This client keeps one connection,
writes every command issued in one event-loop turn with one write(2), and parses the replies with
hiredis's `Reader` (simple strings come back as bytes). Its failures are redis-py's exceptions
(ConnectionError, TimeoutError, and each error reply as the class redis-py gives it: NoScriptError,
BusyLoadingError, OutOfMemoryError...), so the gate's fail-open / fail-closed handling is the same.

Only a plain TCP single server is handled (`for_client` answers None for TLS, a Unix socket, a
cluster or a test double): those keep using redis-py.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    MasterDownError,
    NoPermissionError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# an error reply's first word, and the class redis-py raises for it (else ResponseError): LOADING and
# MASTERDOWN are outages to the gate, NOSCRIPT reloads the script, OOM and READONLY refuse a cache write
_ERRORS: dict[str, type[RedisError]] = {
    "NOSCRIPT": NoScriptError, "LOADING": BusyLoadingError, "OOM": OutOfMemoryError, "READONLY": ReadOnlyError,
    "MASTERDOWN": MasterDownError, "WRONGPASS": AuthenticationError, "NOAUTH": AuthenticationError,
    "NOPERM": NoPermissionError,
}
_MORE = object()  # Reader.gets(): the buffer ends inside a reply


def _error(reply: ResponseError) -> Exception:
    """redis-py's exception class for an error reply."""
    message = str(reply)
    code, _, rest = message.partition(" ")
    specific = _ERRORS.get(code)
    # as redis-py's parser: the class names the code, the message is what follows it
    return reply if specific is None else specific(rest)


def bulk_strings(args: tuple[Any, ...] | list[Any]) -> bytes:
    """Arguments as RESP bulk strings (str as UTF-8, numbers as their decimal text)."""
    parts = []
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def encode(args: tuple[Any, ...]) -> bytes:
    """A command as a RESP array of bulk strings."""
    return b"*%d\r\n" % len(args) + bulk_strings(args)


def text_bulk_strings(texts: list[str]) -> bytes:
    """Like bulk_strings for str arguments, encoded once for all of them (keys are ASCII here)."""
    joined = "".join([f"${len(text)}\r\n{text}\r\n" for text in texts])
    return joined.encode() if joined.isascii() else bulk_strings(texts)


class _Protocol(asyncio.Protocol):
    """One connection's bytes, parsed by its own hiredis Reader."""

    def __init__(self, owner: PipelinedRedis) -> None:
        self._owner = owner
        self.reader = hiredis.Reader(protocolError=RedisConnectionError, replyError=ResponseError,
                                     notEnoughData=_MORE)

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        self._owner._received(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._owner._lost(self, exc)


class PipelinedRedis:
    """One connection to one Redis server; commands are pipelined, replies matched in order."""

    def __init__(self, host: str, port: int, *, db: int = 0, username: str | None = None,
                 password: str | None = None, timeout: float | None = None,
                 connect_timeout: float | None = None) -> None:
        self._address = (host, port)
        self._hello: list[tuple[Any, ...]] = []
        if password:
            self._hello.append(("AUTH", username, password) if username else ("AUTH", password))
        if db:
            self._hello.append(("SELECT", db))
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._out: list[bytes] = []
        self._flush_scheduled = False
        self._watchdog: asyncio.TimerHandle | None = None
        self._closed = False
        # EVALSHA's constant parts, encoded once: the head per (script, key count, argument count), and
        # the arguments per tuple (integers only: as dict keys 1, 1.0 and True are the same)
        self._heads: dict[tuple[str, int, int], bytes] = {}
        self._tails: dict[tuple[int, ...], bytes] = {}

    @classmethod
    def for_client(cls, client: Any) -> PipelinedRedis | None:
        """A pipe to the server of a redis-py client over plain TCP; None for anything else."""
        if type(client) is not Redis or client.connection_pool.connection_class is not Connection:
            return None
        kw = client.connection_pool.connection_kwargs
        if kw.get("credential_provider") is not None or kw.get("protocol") not in (None, 2, 3, "2", "3"):
            return None
        return cls(kw.get("host", "localhost"), int(kw.get("port", 6379)), db=int(kw.get("db") or 0),
                   username=kw.get("username"), password=kw.get("password"), timeout=kw.get("socket_timeout"),
                   connect_timeout=kw.get("socket_connect_timeout"))

    async def execute(self, *args: Any) -> Any:
        """Send one command; its reply, or redis-py's exception for an error reply or a failure."""
        if self._transport is None:
            await self._connect()
        return await self._send(encode(args))

    async def execute_many(self, commands: Sequence[bytes]) -> list[Any]:
        """Send many RESP-encoded commands (see encode) in one write, without a task each;
        their replies in order, or the first failure once every reply is in (none is left unretrieved)."""
        if self._transport is None:
            await self._connect()
        futures = [self._send(command) for command in commands]
        replies, failure = [], None
        for future in futures:
            try:
                replies.append(await future)
            except RedisError as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
        return replies

    async def evalsha(self, script: str, sha: str, keys: list[str], args: tuple[int, ...] | list[int | bytes]) -> Any:
        """EVALSHA; when the server has lost the script (a flush, a new server), load it and retry once.
        A tuple of integers (a rate policy's) is encoded once and kept; a list (one call's), each time."""
        if self._transport is None:
            await self._connect()
        if isinstance(args, tuple):
            command = self._evalsha_command(sha, keys, args)
        else:
            command = encode(("EVALSHA", sha, len(keys), *keys, *args))
        try:
            return await self._send(command)
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script)
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)

    def _evalsha_command(self, sha: str, keys: list[str], args: tuple[int, ...]) -> bytes:
        """The encoded EVALSHA, its constant parts (script, key count, a policy's arguments) encoded once."""
        shape = (sha, len(keys), len(args))
        head = self._heads.get(shape)
        if head is None:
            head = self._heads[shape] = b"*%d\r\n" % (3 + len(keys) + len(args)) + bulk_strings(
                ("EVALSHA", sha, len(keys)))
        tail = self._tails.get(args)
        if tail is None:
            # bounded: policies are few, but each organisation may have its own
            if len(self._tails) >= 1024:
                self._tails.clear()
            tail = self._tails[args] = bulk_strings(args)
        return head + text_bulk_strings(keys) + tail

    def _send(self, command: bytes) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._out.append(command)
        self._pending.append((future, time.monotonic()))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if self._watchdog is None and self._timeout:
            self._watchdog = loop.call_later(self._timeout / 10, self._check_timeout)
        return future

    def _flush(self) -> None:
        """Every command of this loop turn in one write."""
        self._flush_scheduled = False
        if self._out and self._transport is not None:
            data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
            self._out.clear()
            self._transport.write(data)

    async def _connect(self) -> None:
        if self._closed:
            raise RedisConnectionError("the Redis pipe is closed")
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            await asyncio.shield(connecting)
        finally:
            if connecting.done() and self._connecting is connecting:
                self._connecting = None

    async def _open(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            transport, protocol = await asyncio.wait_for(
                loop.create_connection(lambda: _Protocol(self), *self._address), self._connect_timeout)
        except TimeoutError:
            raise RedisTimeoutError("Timeout connecting to server") from None
        except OSError as exc:
            raise RedisConnectionError(f"Error {exc.errno} connecting to {self._address[0]}:{self._address[1]}. "
                                       f"{exc.strerror or exc}") from None
        self._transport, self._protocol = transport, protocol
        try:
            for command in self._hello:
                await self._send(encode(command))
        except BaseException:
            self._fail(RedisConnectionError("Redis refused the connection's AUTH or SELECT"))
            raise

    def _received(self, protocol: _Protocol) -> None:
        if protocol is not self._protocol:
            return
        gets, pending = protocol.reader.gets, self._pending
        try:
            while (reply := gets()) is not _MORE:
                future, _ = pending.popleft()
                if future.done():  # its caller was cancelled
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(_error(reply))
                else:
                    future.set_result(reply)
        except (RedisConnectionError, IndexError) as exc:
            # a corrupt stream, or a reply nobody asked for: the connection cannot be trusted any more
            self._fail(RedisConnectionError(f"unreadable reply from Redis: {exc}"))

    def _check_timeout(self) -> None:
        """Fail every waiting command once the oldest has waited longer than the socket timeout."""
        self._watchdog = None
        if not self._pending or not self._timeout:
            return
        if time.monotonic() - self._pending[0][1] > self._timeout:
            self._fail(RedisTimeoutError("Timeout reading from socket"))
            return
        self._watchdog = asyncio.get_running_loop().call_later(self._timeout / 10, self._check_timeout)

    def _lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            self._fail(RedisConnectionError("Connection closed by server."))

    def _fail(self, error: Exception) -> None:
        """Drop the connection; every command waiting on it fails with `error`."""
        transport, self._transport, self._protocol = self._transport, None, None
        self._out.clear()
        pending, self._pending = self._pending, deque()
        for future, _ in pending:
            if not future.done():
                future.set_exception(error)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if transport is not None:
            transport.abort()

    async def aclose(self) -> None:
        """Close the connection; waiting commands fail."""
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
            self._connecting = None
        self._fail(RedisConnectionError("the Redis pipe is closed"))
        await asyncio.sleep(0)  # let the transport finish closing
