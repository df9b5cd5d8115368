"""The pipelined Redis connection of the gate, on the test session's real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid

import pytest
import redis.asyncio as aioredis
from redis.exceptions import (
    AuthenticationError,
    BusyLoadingError,
    MasterDownError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.core.ratelimit import GATE_SCRIPT, org_key
from service.core.redis_pipe import PipelinedRedis, _Protocol
from service.embedded.process import free_port
from tests.helpers import wait_until

SHA = hashlib.sha1(GATE_SCRIPT.encode()).hexdigest()


@pytest.fixture
async def direct(redis_url):
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def pipe(redis_url):
    pipe = PipelinedRedis.for_client(aioredis.Redis.from_url(redis_url, socket_timeout=1.0))
    assert pipe is not None
    yield pipe
    await pipe.aclose()


async def test_gate_script_answers_like_redis_py(pipe, direct):
    await direct.set(org_key("o", "lk:x"), b"cached answer")
    keys, args = [org_key("o", "rl"), org_key("o", "lk:x")], [2, 5, 1, 50, 60]
    ours = await pipe.evalsha(GATE_SCRIPT, SHA, keys, args)
    theirs = await direct.register_script(GATE_SCRIPT)(keys=keys, args=args)
    assert ours[:3] == [1, 0, b"cached answer"] and theirs[:3] == [1, 0, b"cached answer"]
    assert ours[3::2] == [4, 49] and theirs[3::2] == [3, 48]  # one token each, same buckets
    assert await pipe.evalsha(GATE_SCRIPT, SHA, [org_key("o", "rl2"), org_key("o", "none")], [0]) == [1, 0, None]


async def test_many_concurrent_commands_get_their_own_replies(pipe, direct):
    keys = [f"pipe:{uuid.uuid4().hex}:{i}" for i in range(300)]
    await asyncio.gather(*(pipe.execute("SET", key, f"value-{i}", "EX", 60) for i, key in enumerate(keys)))
    values = await asyncio.gather(*(pipe.execute("GET", key) for key in keys))
    assert values == [f"value-{i}".encode() for i in range(len(keys))]
    assert await direct.get(keys[7]) == b"value-7"


async def test_large_values_and_nested_replies(pipe):
    key = f"pipe:{uuid.uuid4().hex}"
    big = b"x" * 1_000_000  # arrives in many chunks
    assert await pipe.execute("SET", key, big) == b"OK"
    assert await pipe.execute("GET", key) == big
    assert await pipe.execute("EVAL", "return {1, {2, 'a'}, false, {}}", 0) == [1, [2, b"a"], None, []]
    assert await pipe.execute("GET", f"{key}:missing") is None


async def test_error_reply_fails_only_its_command(pipe):
    key = f"pipe:{uuid.uuid4().hex}"
    results = await asyncio.gather(pipe.execute("SET", key, "1"), pipe.execute("NOSUCHCOMMAND"),
                                   pipe.execute("INCR", key), return_exceptions=True)
    assert results[0] == b"OK" and isinstance(results[1], ResponseError) and results[2] == 2


async def test_flushed_script_is_loaded_again(pipe, direct):
    await direct.script_flush()
    with pytest.raises(NoScriptError):
        await pipe.execute("EVALSHA", SHA, 1, org_key("o", "rl"), 0)
    assert await pipe.evalsha(GATE_SCRIPT, SHA, [org_key("o", "rl")], [0]) == [1, 0, None]
    assert (await direct.script_exists(SHA))[0]


async def test_unreachable_server_is_a_connection_error():
    pipe = PipelinedRedis("127.0.0.1", free_port(), timeout=1.0, connect_timeout=1.0)
    with pytest.raises(RedisConnectionError):
        await pipe.execute("PING")
    await pipe.aclose()


async def test_connection_killed_fails_waiting_commands_then_reconnects(pipe, direct):
    assert await pipe.execute("CLIENT", "SETNAME", "gate-pipe") == b"OK"
    blocked = asyncio.ensure_future(pipe.execute("BLPOP", f"pipe:{uuid.uuid4().hex}", 0))

    async def blocked_in_redis() -> bool:
        return any(c["name"] == "gate-pipe" and c["cmd"] == "blpop" for c in await direct.client_list())

    await wait_until(blocked_in_redis, timeout=10, interval=0.01)
    await direct.client_kill_filter(_type="normal", skipme=True)
    with pytest.raises(RedisConnectionError):
        async with asyncio.timeout(10):
            await blocked
    assert await pipe.execute("PING") == b"PONG"


async def test_a_reply_that_does_not_come_times_out_and_the_next_command_works(redis_url):
    pipe = PipelinedRedis.for_client(aioredis.Redis.from_url(redis_url, socket_timeout=0.3))
    assert pipe is not None
    started = time.monotonic()
    # the reply never comes (BLPOP ... 0 blocks for ever): only the socket timeout ends the wait
    with pytest.raises(RedisTimeoutError):
        async with asyncio.timeout(30):
            await pipe.execute("BLPOP", f"pipe:{uuid.uuid4().hex}", 0)
    assert time.monotonic() - started >= 0.3
    assert await pipe.execute("PING") == b"PONG"
    await pipe.aclose()


async def test_database_and_password_from_the_url(redis_url, direct):
    await direct.config_set("requirepass", "s3cret")
    try:
        url = redis_url.replace("redis://", "redis://:s3cret@").rsplit("/", 1)[0] + "/2"
        pipe = PipelinedRedis.for_client(aioredis.Redis.from_url(url))
        assert pipe is not None
        key = f"pipe:{uuid.uuid4().hex}"
        assert await pipe.execute("SET", key, "in db 2") == b"OK"
        await pipe.aclose()
        other = aioredis.Redis.from_url(url)
        assert await other.get(key) == b"in db 2"
        await other.aclose()
        wrong = PipelinedRedis.for_client(aioredis.Redis.from_url(redis_url.replace("redis://", "redis://:nope@")))
        assert wrong is not None
        with pytest.raises(AuthenticationError):  # WRONGPASS, as redis-py raises it: a ConnectionError
            await wrong.execute("PING")
        await wrong.aclose()
    finally:
        authed = aioredis.Redis.from_url(redis_url.replace("redis://", "redis://:s3cret@"))
        await authed.config_set("requirepass", "")
        await authed.aclose()


async def test_closed_pipe_refuses_commands(pipe):
    await pipe.aclose()
    with pytest.raises(RedisConnectionError):
        await pipe.execute("PING")


def test_only_plain_tcp_single_servers_get_a_pipe():
    import fakeredis

    assert PipelinedRedis.for_client(aioredis.Redis.from_url("redis://127.0.0.1:1")) is not None
    assert PipelinedRedis.for_client(aioredis.Redis.from_url("rediss://127.0.0.1:1")) is None
    assert PipelinedRedis.for_client(aioredis.Redis.from_url("unix:///tmp/redis.sock")) is None
    assert PipelinedRedis.for_client(fakeredis.aioredis.FakeRedis()) is None


class _Transport(asyncio.Transport):
    """Takes the pipe's writes; the test plays the server's side by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def abort(self) -> None:
        self.aborted = True


def _connected_by_hand() -> tuple[PipelinedRedis, _Protocol, _Transport]:
    pipe = PipelinedRedis("127.0.0.1", free_port())
    protocol, transport = _Protocol(pipe), _Transport()
    pipe._protocol, pipe._transport = protocol, transport
    return pipe, protocol, transport


REPLIES = [
    (b"*7\r\n:-12\r\n$0\r\n\r\n$-1\r\n$4\r\na\r\nb\r\n+OK\r\n*2\r\n:3\r\n$1\r\nx\r\n*0\r\n",
     [-12, b"", None, b"a\r\nb", b"OK", [3, b"x"], []]),
    (b"-NOSCRIPT No matching script. Please use EVAL.\r\n", NoScriptError),
    (b"-LOADING Redis is loading the dataset in memory\r\n", BusyLoadingError),
    (b"-OOM command not allowed when used memory > 'maxmemory'.\r\n", OutOfMemoryError),
    (b"-READONLY You can't write against a read only replica.\r\n", ReadOnlyError),
    (b"-MASTERDOWN Link with MASTER is down\r\n", MasterDownError),
    (b"-WRONGPASS invalid username-password pair\r\n", AuthenticationError),
    (b"-ERR unknown command 'NOSUCHCOMMAND'\r\n", ResponseError),
    (b"$5\r\nhello\r\n", b"hello"),
]


async def _outcomes(futures):
    out = []
    for outcome in await asyncio.gather(*futures, return_exceptions=True):
        out.append((type(outcome), str(outcome)) if isinstance(outcome, Exception) else outcome)
    return out


async def test_replies_cut_anywhere_answer_their_commands_in_order():
    stream = b"".join(reply for reply, _ in REPLIES)
    for cut in range(1, len(stream)):
        pipe, protocol, _ = _connected_by_hand()
        futures = [pipe._send(b"command") for _ in REPLIES]
        protocol.data_received(stream[:cut])
        assert sum(future.done() for future in futures) < len(REPLIES)
        protocol.data_received(stream[cut:])
        outcomes = await _outcomes(futures)
        for (reply, expected), outcome in zip(REPLIES, outcomes, strict=True):
            if isinstance(expected, type):
                # exactly redis-py's class and message for that error reply: a code redis-py knows is
                # the class, and the message what follows it; any other error keeps its whole text
                text = reply[1:-2].decode()
                message = text if expected is ResponseError else text.partition(" ")[2]
                assert outcome == (expected, message), (cut, reply)
            else:
                assert outcome == expected, (cut, reply)
        await pipe.aclose()


async def test_a_corrupt_stream_fails_the_waiting_commands_and_drops_the_connection():
    pipe, protocol, transport = _connected_by_hand()
    waiting = [pipe._send(b"command"), pipe._send(b"command")]
    protocol.data_received(b":1\r\n?what\r\n")
    assert await waiting[0] == 1
    with pytest.raises(RedisConnectionError, match="unreadable reply from Redis"):
        await waiting[1]
    assert transport.aborted and pipe._transport is None
    await pipe.aclose()


async def test_a_reply_nobody_asked_for_drops_the_connection():
    pipe, protocol, transport = _connected_by_hand()
    waiting = pipe._send(b"command")
    protocol.data_received(b":1\r\n:2\r\n")
    assert await waiting == 1
    assert transport.aborted and pipe._transport is None
    await pipe.aclose()
