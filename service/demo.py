"""`python -m service demo`: demo data in the configured servers, and curl commands that use it.

Creates an organisation, an API key, a survey (no redirectUrl), two metadata fields, 300
contacts (email, firstName, plan, age), a segment and a created link, then prints commands for
the server at PUBLIC_BASE_URL: a page of contact links, one contact's link, opening links,
creating a link, the segment's size, a bulk upsert, and a redirect. The server is the one that
PUBLIC_BASE_URL names, else the `serve` running on the same DATA_DIR (wherever it listens).
"""

from __future__ import annotations

import asyncio
import json
import random
import shlex
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from .admin import DEFAULT_LINK_QUOTA, new_tenant
from .core.links import LinkRequest, create_or_replay
from .core.segments import validate_filters
from .core.signing import LinkSigner
from .db import contacts as contact_db
from .db import members as members_db
from .db import segments as segment_db
from .db import surveys as survey_db
from .db.pool import create_pool
from .settings import Settings
from .web.render import link_json

CONTACT_COUNT = 300
FIRST_NAMES = ("Ada", "Ben", "Chloe", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemi", "Lena")
PLANS = ("free", "pro", "team", "enterprise")
# the printed commands, pasted all at once, make six API calls within a second: the default policy
# (5/second) would refuse the last ones, and step 8 would show no redirect
DEMO_POLICY = "20/second;300/minute"
# -S: a refused connection says so; -w: each answer on its own line when the commands are pasted at once
CURL = "curl -sS -w '\\n'"
SEGMENT_FILTERS = {"and": [{"attribute": "plan", "op": "in", "value": ["pro", "team"]},
                           {"attribute": "age", "op": "greaterEqual", "value": 30}]}


@dataclass(frozen=True)
class Demo:
    org_id: str
    key: str
    survey_id: str
    field_ids: tuple[int, int]
    segment_id: str
    contact_id: int
    contact_url: str
    created_url: str


def demo_contacts(count: int = CONTACT_COUNT) -> list[dict[str, object]]:
    """Deterministic contacts: the same demo data on every run."""
    rng = random.Random(7)
    return [
        {"email": f"contact{i:04d}@example.com", "firstName": rng.choice(FIRST_NAMES),
         "plan": rng.choice(PLANS), "age": rng.randrange(18, 80)}
        for i in range(1, count + 1)
    ]


async def create_demo(settings: Settings) -> Demo:
    """Write the demo data through the same functions the API uses."""
    assert settings.database_url
    pool = await create_pool(settings.database_url, 2)
    try:
        async with pool.acquire() as conn:
            stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")
            org, key = await new_tenant(conn, f"Demo {stamp}", DEFAULT_LINK_QUOTA, DEMO_POLICY, "demo")
            survey = await survey_db.insert_survey(conn, org.id, "Demo survey", "inProgress", None, None)
            sku = await survey_db.insert_metadata_field(conn, org.id, "SKU Number", "sku")
            channel = await survey_db.insert_metadata_field(conn, org.id, "Channel", "channel")
            assert sku is not None and channel is not None
            await contact_db.upsert_by_email(conn, org.id, demo_contacts())
            filters, issues = validate_filters(SEGMENT_FILTERS)
            assert not issues
            segment = await segment_db.insert_segment(conn, org.id, "Pro and team, 30 or older", filters)
            page = await members_db.member_page(conn, org.id, filters, 1, 0, [])
            contact_id = page[0].contact_id
        request = LinkRequest.build(survey.id, "Demo link", [{"metadata_id": sku.id, "value": "SKU-12345"},
                                                             {"metadata_id": channel.id, "value": ["email", "sms"]}])
        created = await create_or_replay(pool, org.id, request)
    finally:
        await pool.close()
    signer = LinkSigner(settings.signing_keys)
    base = settings.public_base_url
    return Demo(
        org_id=str(org.id), key=key, survey_id=str(survey.id), field_ids=(sku.id, channel.id),
        segment_id=str(segment.id), contact_id=contact_id,
        contact_url=f"{base}/c/{signer.contact_token(survey.seq, contact_id, None)}",
        created_url=link_json(created, signer, base)["survey_url"],
    )


def commands(demo: Demo, base: str) -> list[tuple[str, str]]:
    """(what it shows, the command) for each step."""
    key = shlex.quote(f"x-api-key: {demo.key}")
    json_type = "-H 'content-type: application/json'"
    management = f"{base}/api/v2/management"
    links = f"{management}/surveys/{demo.survey_id}/contact-links"

    def body(data: object) -> str:
        return shlex.quote(json.dumps(data))

    filum_body = {"name": "SKU 777 - Link 001", "metadata_mapping": [
        {"metadata_id": demo.field_ids[0], "value": "SKU-777"}, {"metadata_id": demo.field_ids[1], "value": "web"}]}
    bulk = {"contacts": [{"attributes": {"email": "contact0001@example.com", "plan": "team", "age": 44}},
                         {"attributes": {"email": "newcomer@example.com", "firstName": "Nia", "plan": "pro",
                                         "age": 35}}]}
    return [
        ("A page of signed contact links for the segment (5 contacts, with two attributes, valid 7 days)",
         f"{CURL} {shlex.quote(f'{links}/segments/{demo.segment_id}?limit=5&skip=0&expirationDays=7&attributeKeys=email,firstName')} -H {key}"),  # noqa: E501
        ("The link of one contact",
         f"{CURL} {shlex.quote(f'{links}/contacts/{demo.contact_id}')} -H {key}"),
        ("Open a contact link as a respondent (no redirectUrl yet: 200 with the facts as JSON)",
         f"{CURL} -i {shlex.quote(demo.contact_url)}"),
        ("Open a created link (its metadata variables come along)",
         f"{CURL} -i {shlex.quote(demo.created_url)}"),
        ("Create a link the Filum way (idempotent: run it twice, get the same link)",
         f"{CURL} -X POST {shlex.quote(f'{base}/external/survey-campaigns/{demo.survey_id}/links')}"
         f" -H {shlex.quote(f'Authorization: Bearer {demo.key}')} -H {shlex.quote(f'organization-id: {demo.org_id}')}"
         f" -H 'auth-type: token' {json_type} -d {body(filum_body)}"),
        ("The segment and how many contacts it holds",
         f"{CURL} {shlex.quote(f'{management}/segments/{demo.segment_id}')} -H {key}"),
        ("Update one contact and add another, matched by email",
         f"{CURL} -X PUT {shlex.quote(f'{management}/contacts/bulk')} -H {key} {json_type} -d {body(bulk)}"),
        ("Give the survey a redirectUrl, then open the contact link again: 302 with surveyId and contactId",
         f"{CURL} -X PATCH {shlex.quote(f'{management}/surveys/{demo.survey_id}')} -H {key} {json_type}"
         f" -d {body({'redirectUrl': 'https://example.com/thanks?from=demo'})}"
         f" && {CURL} -i {shlex.quote(demo.contact_url)}"),
    ]


def run_demo(settings: Settings) -> int:
    """Create the demo data and print the commands; 0 on success."""
    from .runtime import served_url, servers

    running = served_url(settings)
    if running:
        settings = settings.listening_at(running)
    try:
        with servers(settings, migrate=True) as ready:
            demo = asyncio.run(create_demo(ready))
    except Exception as exc:
        print(json.dumps({"error": f"demo failed: {type(exc).__name__}: {exc}"}), file=sys.stderr)
        return 1
    base = settings.public_base_url
    # every line a comment or a command: the whole output can be pasted into a shell
    print(f"# Demo organisation {demo.org_id}: API key {demo.key}")
    print(f"# Survey {demo.survey_id}, segment {demo.segment_id}, {CONTACT_COUNT} contacts.")
    if running or settings.public_base_url_set:
        print(f"# For the server at {base}:\n")
    else:
        print(f"# No server runs on this DATA_DIR and PUBLIC_BASE_URL is unset: for a server at {base}:\n")
    for number, (what, command) in enumerate(commands(demo, base), start=1):
        print(f"# {number}. {what}\n{command}\n")
    return 0
