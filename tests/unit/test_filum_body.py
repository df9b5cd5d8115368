"""The Filum path's reading of what FastAPI sees before its model: uuid spellings, JSON errors."""

from __future__ import annotations

import json
import uuid

import pytest

from service.web.filum_body import campaign_uuid, decode_issue

PY313_TRAILING_COMMA = [  # what Python 3.13's json module raises, and what 3.11 (the reference) answers
    ('{"name": "x",}', "Illegal trailing comma before end of object", 12,
     "Expecting property name enclosed in double quotes", 13),
    ('{"a": 1 ,  \r\n}', "Illegal trailing comma before end of object", 8,
     "Expecting property name enclosed in double quotes", 13),
    ("[1, ]", "Illegal trailing comma before end of array", 2, "Expecting value", 4),
    ('{"a": [1,\n\t ]}', "Illegal trailing comma before end of array", 8, "Expecting value", 12),
]


@pytest.mark.parametrize(("doc", "msg313", "pos313", "msg", "pos"), PY313_TRAILING_COMMA)
def test_a_trailing_comma_is_answered_in_the_same_words_on_every_python(monkeypatch, doc, msg313, pos313, msg, pos):
    def loads_313(raw):
        raise json.JSONDecodeError(msg313, raw.decode(), pos313)

    expected = json.JSONDecodeError(msg, doc, pos)
    ctx = {"msg": msg, "doc": doc, "pos": pos, "lineno": expected.lineno, "colno": expected.colno}
    for loads in (json.loads, loads_313):  # this Python's own, and 3.13's
        monkeypatch.setattr(json, "loads", loads)
        issue = decode_issue(doc.encode())
        assert issue is not None
        assert (issue.loc, issue.msg, issue.type, issue.ctx) == (("body", pos), str(expected), "value_error.jsondecode",
                                                                 ctx)


@pytest.mark.parametrize("raw", [
    b"NaN", b'{"a": 1e400}', b"\xef\xbb\xbf{}", '{"a": 1}'.encode("utf-16"),  # read by json, not orjson
    b'["\xed\xa0\x80"',  # a lone surrogate in the document: it cannot be answered as JSON
    b"\xff{", b"[" * 100_000,  # not UTF-8 (FastAPI: 400), past Python's recursion limit
])
def test_what_the_standard_library_reads_or_cannot_answer_is_left_to_the_caller(raw):
    assert decode_issue(raw) is None


def test_a_campaign_id_in_any_lossless_spelling():
    value = uuid.UUID("0b9c5f4e-1c2d-4e5f-8a9b-0c1d2e3f4a5b")
    text, plain = str(value), value.hex
    for spelling in (text, text.upper(), plain, "{" + text + "}", "{{" + plain + "}}", "urn:uuid:" + text,
                     "-" + plain[:10] + "--" + plain[10:]):
        assert campaign_uuid(spelling) == value, spelling
    for spelling in ("+" + plain[1:], plain[:5] + "_" + plain[6:], " " + plain[1:], plain[:31], plain + "0",
                     "URN:UUID:" + text, text[:-1] + "g", "\u0661" + plain[1:], ""):
        assert campaign_uuid(spelling) is None, spelling
