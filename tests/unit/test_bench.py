"""The benchmark's own pieces that need no load: wrk lookup, the table, profiles, forged links."""

from __future__ import annotations

import shutil
from importlib import resources

import pytest

from service.bench import profile, wrk
from service.bench.report import Check, Row, Target, checks_table, fill_ratios, table
from service.bench.seed_contacts import forged
from service.bench.wrk import WrkMissing, WrkResult


def _result(rps: float) -> WrkResult:
    return WrkResult(requests=int(rps * 8), seconds=8.0, errors=0, status_errors=0, p50_ms=1.0, p99_ms=2.0,
                     wrk_cpu=0.1)


def test_missing_wrk_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, **kw: None)
    with pytest.raises(WrkMissing, match="apt-get install -y wrk"):
        wrk.find_wrk(install=False)


def test_the_lua_script_is_packaged():
    script = resources.files("service.bench").joinpath("lua/bench.lua").read_text()
    assert "BENCH_RESULT" in script and "%%N%%" in script


def test_table_ratios_and_targets():
    rows = [Row("ref", "reference", _result(1000)),
            Row("a", "(a) replay", _result(1200), "ref", Target(ratio=1.0), cpu_us=300, cpu_share=1.0),
            Row("b", "(b) new", _result(900), "ref", Target(minimum=1000))]
    fill_ratios(rows)
    text = table(rows)
    assert "| (a) replay | 1,200 | 1.00 | 2.00 | 300 | 100% | 1.20x | ref | >= 1.0x | ok |" in text
    assert "| (b) new | 900 |" in text and text.rstrip().endswith("MISS |")
    assert "| rss | 70 MB | < 150 MB | ok |" in checks_table([Check("rss", "70 MB", "< 150 MB", True)])


def test_profile_summary_counts_own_and_inclusive_time(tmp_path):
    raw = tmp_path / "p.txt"
    raw.write_text("main (app.py:1);handle (web.py:10);parse (json.py:5) 3\nmain (app.py:1);handle (web.py:12) 1\n")
    summary = profile.summarize(raw)
    assert "4 samples" in summary
    assert "75.0%  parse (json.py)" in summary and "100.0%  handle (web.py)" in summary


def test_forged_link_differs_in_its_signature_only():
    path = "/c/aaa.bbb.cccAd"
    assert forged(path) != path and forged(path).rsplit(".", 1)[0] == path.rsplit(".", 1)[0]


@pytest.mark.parametrize("kind", ["route", "nop", "lean"])
async def test_the_floor_servers_refuse_the_forged_link_and_open_the_real_one(aiohttp_client, kind):
    from service.bench import floor

    client = await aiohttp_client(floor._app(kind)[0])
    refused = await client.get(floor.FORGED)
    assert refused.status == 404
    assert await refused.json() == {"error": {"code": 404, "message": "Not Found",
                                              "details": [{"field": "token", "issue": "not found"}]}}
    assert ("X-Request-Id" in refused.headers) is (kind == "lean")
    opened = await client.get("/c/" + floor._TOKEN)
    assert opened.status == 200
