"""The access-line fast path writes what logging + JsonFormatter would, in order."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re

import pytest
from aiohttp.http_exceptions import LineTooLong

from service import logs

FIELDS = {"request_id": "r-1", "method": "POST", "route": "/x/{id}", "status": 200, "duration_ms": 1.25, "org": None}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Stream(io.TextIOWrapper):
    """A text stream over bytes, like sys.stderr."""

    handler: logs.JsonLineHandler  # the handler configure_logging put on it (the `stream` fixture)

    def __init__(self) -> None:
        self.written = io.BytesIO()
        super().__init__(self.written, encoding="utf-8", line_buffering=True)

    def lines(self) -> list[dict]:
        self.flush()
        return [json.loads(line) for line in self.written.getvalue().decode().splitlines()]


@pytest.fixture
def stream(monkeypatch):
    """configure_logging on a captured stderr; logging restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    fake = Stream()
    monkeypatch.setattr("sys.stderr", fake)
    logs.configure_logging("INFO", "json")
    (fake.handler,) = [h for h in root.handlers if isinstance(h, logs.JsonLineHandler)]
    yield fake
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    logging.getLogger("aiohttp.server").removeFilter(logs._MALFORMED)


def _only_ours(stream: Stream) -> None:
    """Drop the capture handlers pytest adds for the test's call phase, as in the server."""
    logging.getLogger().handlers[:] = [stream.handler]


def _reference_line(fields: dict) -> dict:
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "request", (), None)
    record.__dict__.update(fields)
    return json.loads(logs.JsonFormatter().format(record))


def test_same_line_as_the_formatter_outside_a_loop(stream, monkeypatch):
    _only_ours(stream)
    sent = []
    def add_line(line: bytes) -> None:
        sent.append(line)
        stream.buffer.write(line)

    monkeypatch.setattr(stream.handler, "add_line", add_line)
    logs.log_access(FIELDS)
    assert len(sent) == 1  # the fast path, not a LogRecord
    (line,) = stream.lines()
    expected = _reference_line(FIELDS)
    assert list(line) == list(expected)
    assert TS.match(line.pop("ts")) and expected.pop("ts")
    assert line == expected


def test_lines_of_one_loop_turn_are_written_together_and_in_order(stream):
    _only_ours(stream)

    async def main() -> None:
        logs.log_access({**FIELDS, "request_id": "a"})
        logs.log_access({**FIELDS, "request_id": "b"})
        assert stream.lines() == []  # queued until the loop turns
        logging.getLogger("service.other").warning("between")  # flushes what came before it
        logs.log_access({**FIELDS, "request_id": "c"})
        await asyncio.sleep(0)
        await asyncio.sleep(0)

    asyncio.run(main())
    lines = stream.lines()
    assert [line.get("request_id", line["msg"]) for line in lines] == ["a", "b", "between", "c"]


def test_other_handlers_get_records_through_logging(stream, caplog):
    caplog.set_level(logging.INFO, logger="service.access")
    logs.log_access(FIELDS)
    (record,) = [r for r in caplog.records if r.name == "service.access"]
    assert record.getMessage() == "request" and record.request_id == "r-1"


def test_nothing_below_the_level(stream):
    logging.getLogger().setLevel(logging.WARNING)
    logs.log_access(FIELDS)
    assert stream.lines() == []


def test_both_formats_show_the_same_fields_and_the_json_time_is_utc_to_the_millisecond():
    record = logging.LogRecord("service.access", logging.INFO, __file__, 1, "request", (), None)
    record.__dict__.update({**FIELDS, "_private": "hidden"})
    record.created = 1_700_000_000.5
    line = json.loads(logs.JsonFormatter().format(record))
    assert line["ts"] == "2023-11-14T22:13:20.500Z" and "_private" not in line
    assert {k: v for k, v in line.items() if k not in ("ts", "level", "logger", "msg")} == FIELDS
    text = logs.TextFormatter().format(record)
    assert text.endswith(" request " + " ".join(f"{k}={v}" for k, v in FIELDS.items()))


@pytest.mark.parametrize(("request_bytes", "error"), [
    (b"GET /c/" + b"secret-token" * 800 + b" HTTP/1.1\r\nHost: x\r\n\r\n", "LineTooLong"),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nsecret-token\r\n", "BadHttpMessage"),
    # an encoding aiohttp has no decoder for here (no Brotli installed), as the README says
    (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Encoding: br\r\nContent-Length: 12\r\n\r\nsecret-token",
     "ContentEncodingError"),
])
async def test_a_request_aiohttp_cannot_parse_is_one_warning_line_without_its_bytes(
        stream, aiohttp_server, request_bytes, error):
    """aiohttp answers it with its own 400; the log gets the parser's error class, no traceback, and
    none of the request's bytes (its message quotes them)."""
    from aiohttp import web

    server = await aiohttp_server(web.Application())
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(request_bytes)
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    assert answer.startswith(b"HTTP/1.0 400 Bad Request\r\n"), answer[:200]
    await server.close()
    lines = [line for line in stream.lines() if line["logger"] == "aiohttp.server"]
    assert len(lines) == 1, lines
    (line,) = lines
    assert {k: v for k, v in line.items() if k != "ts"} == {
        "level": "warning", "logger": "aiohttp.server", "msg": "malformed request refused",
        "status": 400, "error": error}


async def test_a_body_whose_stream_broke_is_one_warning_line(stream, aiohttp_server):
    """Plain bytes sent as gzip: the app answers, then aiohttp trips over the body again while
    draining it and logs an 'Unhandled exception' error; that becomes one warning line."""
    from aiohttp import web

    async def refuse(request: web.Request) -> web.Response:
        with pytest.raises(web.RequestPayloadError):
            await request.read()
        return web.Response(status=422)

    app = web.Application()
    app.router.add_post("/x", refuse)
    server = await aiohttp_server(app)
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nContent-Length: 12\r\n\r\nsecret-token")
    answer = await asyncio.wait_for(reader.read(65536), 10)
    writer.close()
    # the reason phrase is the running Python's (3.13 says "Unprocessable Content"): the code is the contract
    assert answer.startswith(b"HTTP/1.1 422 "), answer[:200]
    await server.close()
    lines = [line for line in stream.lines() if line["logger"] == "aiohttp.server"]
    assert [{k: v for k, v in line.items() if k != "ts"} for line in lines] == [
        {"level": "warning", "logger": "aiohttp.server", "msg": "malformed request body",
         "error": "ContentEncodingError"}]


def test_below_warning_the_rewritten_records_are_dropped_and_others_pass(stream):
    server = logging.getLogger("aiohttp.server")
    malformed, ours = LineTooLong(b"x" * 10, 8190), ValueError("ours")
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                               ("1.2.3.4",), (type(malformed), malformed, None))
    other = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Unhandled exception", (),
                              (type(ours), ours, None))
    assert logs._MALFORMED.filter(other) and other.levelno == logging.ERROR and other.exc_info
    server.setLevel(logging.ERROR)
    try:
        assert not logs._MALFORMED.filter(record)
    finally:
        server.setLevel(logging.NOTSET)
