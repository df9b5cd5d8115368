"""The batch's remember EVALSHAs, encoded with their shared parts once, are encode()'s bytes."""

from __future__ import annotations

from service.core.redis_pipe import encode
from service.core.replay_cache import REMEMBER_SHA, encode_remember


def test_encode_remember_is_encode_of_each_command() -> None:
    commands = [
        ("EVALSHA", REMEMBER_SHA, 2, f"{{o:org}}:lk:k1:s:{i:064x}", "{o:org}:lke:s", b'{"id":%d,"n":"\xc3\xa9"}' % i,
         3600, b"" if i == 0 else b"0123456789abcdef", b"0123456789abcdef")
        for i in range(5)
    ]
    commands.append(("EVALSHA", REMEMBER_SHA, 2, "{o:\u00e9}:lk:k\u00e9:x", "{o:\u00e9}:lke:x", b"", 7, b"e", b"f"))
    assert encode_remember(commands) == [encode(command) for command in commands]
    assert encode_remember([]) == []
