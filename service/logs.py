"""Logging: one JSON object per line (or plain text), never a secret."""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any, TextIO

import orjson
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web import RequestPayloadError

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> Iterator[tuple[str, Any]]:
    """The event's own fields: what `extra=` added to the record, not logging's attributes."""
    for key, value in record.__dict__.items():
        if key not in _STANDARD and not key.startswith("_"):
            yield key, value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """`LOG_FORMAT=text`: the time, level, logger and message, then the event's fields as key=value
    (an access line shows its method, route, status and duration, as in the JSON form)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = " ".join(f"{key}={value}" for key, value in _fields(record))
        return f"{line} {fields}" if fields else line


class JsonLineHandler(logging.StreamHandler[TextIO]):
    """A stream handler that also takes access lines already encoded, written once per event-loop turn.

    One write(2) per loop turn for every access line of that turn, instead of a LogRecord, a
    formatter pass and a write per request. Any other record first flushes the lines before it,
    so the order of lines is kept.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._lines: list[bytes] = []
        self._scheduled = False

    def add_line(self, line: bytes) -> None:
        self._lines.append(line)
        if not self._scheduled:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            self._scheduled = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            data = b"".join(lines)
            self.acquire()
            try:
                super().flush()
                buffer = getattr(self.stream, "buffer", None)
                if buffer is not None:
                    buffer.write(data)
                    buffer.flush()
                else:
                    self.stream.write(data.decode())
            except (OSError, ValueError):
                self.handleError(logging.makeLogRecord({"msg": "access lines"}))
            finally:
                self.release()
        self._scheduled = False
        super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        if self._lines:
            self.flush()
        super().emit(record)


_ACCESS = logging.getLogger("service.access")


_second: tuple[int, str] = (-1, "")


def _timestamp(now: float) -> str:
    """The JsonFormatter's `ts` for a time.time() value (the formatted second is reused within it)."""
    global _second
    whole = int(now)
    # read once: a formatter on another thread may replace the cached second meanwhile
    second = _second
    if second[0] != whole:
        second = _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{second[1]}.{int((now - whole) * 1000):03d}Z"


def log_access(fields: dict[str, Any]) -> None:
    """One access line, `{"ts", "level", "logger", "msg": "request", **fields}`, like _ACCESS.info would write.

    When the JSON handler of configure_logging is the only one (the server), the line is encoded
    here and queued on it; otherwise (tests capturing logs, text format) it goes through logging.
    The handler is found where logging keeps it, on the root logger: no copy of it to keep in step.
    """
    if not _ACCESS.isEnabledFor(logging.INFO):
        return
    root_handlers = logging.root.handlers
    handler = root_handlers[0] if len(root_handlers) == 1 else None
    if (type(handler) is not JsonLineHandler or type(handler.formatter) is not JsonFormatter or _ACCESS.handlers
            or _ACCESS.disabled or not _ACCESS.propagate or handler.level > logging.INFO or handler.filters
            or _ACCESS.filters or logging.root.filters):
        _ACCESS.info("request", extra=fields)
        return
    entry = {"ts": _timestamp(time.time()), "level": "info", "logger": "service.access", "msg": "request", **fields}
    handler.add_line(orjson.dumps(entry, default=str) + b"\n")


class MalformedRequests(logging.Filter):
    """Client garbage that aiohttp logs as its own errors, with a traceback, becomes one warning line.

    Two cases, both the client's fault: a request aiohttp cannot parse (a line past 8190 bytes, a
    broken chunk, an encoding it lacks), which it answers with a 400 of its own before the app sees
    it; and a body whose stream broke (plain bytes sent as gzip), which the app answers (422) and
    aiohttp then trips over again while draining the rest. The line names the parser's error class
    but not its message, which quotes up to 100 bytes of the request (a link's token, say).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite those records (or drop them below WARNING); let every other record through."""
        exc = record.exc_info[1] if record.exc_info else None
        if record.levelno < logging.ERROR or not isinstance(exc, HttpProcessingError | RequestPayloadError):
            return True
        if not _SERVER.isEnabledFor(logging.WARNING):  # the one logger this filter sits on
            return False
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        record.exc_info = record.exc_text = None
        record.args = ()
        if isinstance(exc, HttpProcessingError):
            record.msg, record.status, record.error = "malformed request refused", exc.code, type(exc).__name__
        else:
            record.msg, record.error = "malformed request body", type(exc.__cause__ or exc).__name__
        return True


_SERVER = logging.getLogger("aiohttp.server")
_MALFORMED = MalformedRequests()


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route every logger to stderr in the chosen format."""
    handler = JsonLineHandler(sys.stderr) if fmt == "json" else logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aiohttp.access").disabled = True
    if _MALFORMED not in _SERVER.filters:
        _SERVER.addFilter(_MALFORMED)
