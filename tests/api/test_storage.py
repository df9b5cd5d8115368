"""What the service keeps: every Redis key expires, and contact links store nothing."""

from __future__ import annotations

import redis.asyncio as aioredis

from tests.contact_helpers import bulk, contact_link_path, create_segment, segment_links_path
from tests.helpers import TABLES, create_metadata_field, create_survey, links_path, table_snapshot


async def test_every_redis_key_expires_and_contact_links_store_nothing(client, make_tenant, db, redis_url):
    tenant = await make_tenant(rate_limit="100/second;1000/minute")
    survey = await create_survey(client, tenant.headers)
    field = await create_metadata_field(client, tenant.headers, "sku")
    body = {"name": "x", "metadata_mapping": [{"metadata_id": field["id"], "value": "A"}]}
    assert (await client.post(links_path(survey["id"]), json=body, headers=tenant.headers)).status == 200
    await bulk(client, tenant.headers, [{"email": f"c{i}@x.io", "plan": "pro"} for i in range(120)])
    segment = await create_segment(client, tenant.headers, {"attribute": "plan", "op": "equals", "value": "pro"})

    # the tables counted are the database's, all of them (a schema statement the regex misreads fails here)
    tables = await db.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert sorted(TABLES) == sorted(r["tablename"] for r in tables)
    before = await table_snapshot(db)
    page_path = segment_links_path(survey["id"], segment["id"])
    for skip in (0, 50, 100):  # counts and page positions go to the segment cache
        resp = await client.get(page_path, params={"limit": 50, "skip": skip, "expirationDays": 7},
                                headers=tenant.headers)
        assert resp.status == 200
        contact_id = (await resp.json())["data"][0]["contactId"]
    resp = await client.get(contact_link_path(survey["id"], contact_id), headers=tenant.headers)
    assert resp.status == 200
    resp = await client.get(page_path + "/export", headers=tenant.headers)
    assert resp.status == 200 and len((await resp.text()).splitlines()) == 121
    assert await table_snapshot(db) == before  # nothing is stored per link

    r = aioredis.Redis.from_url(redis_url)
    keys = [k async for k in r.scan_iter(count=1000)]
    kinds = {k.decode().partition("}:")[2].split(":")[0] for k in keys}
    # buckets, the replay cache (its entries and its survey's epoch) and the segment cache were written
    assert kinds == {"rl", "lk", "lke", "seg"}, keys
    assert all(k.decode().startswith(f"{{o:{tenant.org}}}:") for k in keys), keys  # one hash slot
    ttls = {k: await r.ttl(k) for k in keys}
    await r.aclose()
    assert all(ttl > 0 for ttl in ttls.values()), ttls
