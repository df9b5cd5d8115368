"""RESP2 encoding and the reply parser of the pipelined Redis connection (`redis_pipe.py`).

Only what the gate's calls need: commands as arrays of bulk strings, and the reply types Redis
sends for them (integers, bulk strings, arrays of those, simple strings, errors as redis-py's
exception objects).
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import BusyLoadingError, NoScriptError, RedisError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError

_CRLF = b"\r\n"


class Incomplete(Exception):
    """The buffer ends inside a reply; wait for more bytes."""


def _error(message: str) -> RedisError:
    """redis-py's exception class for an error reply."""
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith("LOADING"):
        return BusyLoadingError(message)
    return ResponseError(message)


def parse(buf: bytes, pos: int) -> tuple[Any, int]:
    """One RESP2 reply at `pos`: the value (an error reply as an exception object) and where it ends."""
    end = buf.find(_CRLF, pos)
    if end < 0:
        raise Incomplete
    kind = buf[pos]
    if kind == 58:  # ':' integer
        return int(buf[pos + 1:end]), end + 2
    if kind == 36:  # '$' bulk string
        size = int(buf[pos + 1:end])
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            raise Incomplete
        return buf[end + 2:stop], stop + 2
    if kind == 42:  # '*' array
        count = int(buf[pos + 1:end])
        if count < 0:
            return None, end + 2
        items = []
        pos = end + 2
        for _ in range(count):
            # the gate's replies are arrays of integers and bulk strings: read those inline
            end = buf.find(_CRLF, pos)
            if end < 0:
                raise Incomplete
            kind = buf[pos]
            if kind == 58:
                items.append(int(buf[pos + 1:end]))
                pos = end + 2
            elif kind == 36:  # a bulk string, or the null `$-1` (a Lua false)
                size = int(buf[pos + 1:end])
                if size < 0:
                    items.append(None)
                    pos = end + 2
                    continue
                stop = end + 2 + size
                if len(buf) < stop + 2:
                    raise Incomplete
                items.append(buf[end + 2:stop])
                pos = stop + 2
            else:
                item, pos = parse(buf, pos)
                items.append(item)
        return items, pos
    if kind == 43:  # '+' simple string
        return buf[pos + 1:end].decode(), end + 2
    if kind == 45:  # '-' error
        return _error(buf[pos + 1:end].decode(errors="replace")), end + 2
    raise RedisConnectionError(f"unexpected reply type {chr(kind)!r} from Redis")


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


def set_ex(key: str, value: bytes, seconds: int) -> bytes:
    """`SET key value EX seconds`, encoded in one step (a batch writes a thousand of them)."""
    name = key.encode()
    ttl = b"%d" % seconds
    return b"*5\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n$2\r\nEX\r\n$%d\r\n%b\r\n" % (
        len(name), name, len(value), value, len(ttl), ttl)
