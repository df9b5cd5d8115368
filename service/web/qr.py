"""QR codes of links, for print: `/c/<token>/qr.svg`, `/l/<token>/qr.png`, ... answer the link's URL
(`PUBLIC_BASE_URL/c/<token>`, as the API hands it out) as a QR code drawn by segno.

The token is checked by the same functions as opening it (service/web/opening.py): a forged one is
404 before any database query, an expired one or a survey not in progress is 410. Only the checks:
showing the code is not an open, so nothing an open does (counting it) happens here.
"""

from __future__ import annotations

import io
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import segno
from aiohttp import web
from multidict import MultiMapping

from ..core.errors import Issue, ValidationFailed
from . import opening
from .keys import SETTINGS


@dataclass(frozen=True)
class LinkKind:
    """A kind of link that has a QR code: how opening checks its token, and what the docs say of it."""

    check: Callable[[web.Application, str], Awaitable[object]]
    name: str  # in operation ids: qr_<name>_svg
    what: str
    token: str  # the path parameter's description


# one line per kind of link, keyed by its path prefix (`/c/<token>`)
KINDS: dict[str, LinkKind] = {
    "c": LinkKind(opening.check_contact_link, "contact_link", "a contact link", "The link's signed token (JWT)"),
    "s": LinkKind(opening.check_short_link, "short_link", "a short contact link", "32 characters of base64url"),
    "l": LinkKind(opening.check_created_link, "created_link", "a created (Filum) link", "`<kid>.<public_id>.<mac>`"),
}
FORMATS = {"svg": "image/svg+xml", "png": "image/png"}
ECC_LEVELS = ("L", "M", "Q", "H")
DEFAULT_ECC = "M"
# name -> (lowest, highest, default): at most 20 px a module and 10 of border, so the largest code a
# link can give stays a few MB of PNG work, never a memory spike
QR_INTEGERS: dict[str, tuple[int, int, int]] = {"scale": (1, 20, 4), "border": (0, 10, 4)}
# at most 20 digits: a longer one is refused as not an integer before Python parses it
_INTEGER = re.compile(r"^[+-]?[0-9]{1,20}$")
# the token is in the image: no shared cache may keep it
_NO_STORE = {"Cache-Control": "private, no-store"}


@dataclass(frozen=True)
class QrOptions:
    ecc: str
    scale: int
    border: int


def qr_options(query: MultiMapping[str]) -> QrOptions:
    """`ecc`, `scale` and `border` from the query (others are ignored, as when opening), or one 422
    naming each invalid one: each at most once, `ecc` one of ECC_LEVELS (any case), the integers
    within QR_INTEGERS."""
    issues: list[Issue] = []
    values: dict[str, str | int] = {"ecc": DEFAULT_ECC}
    for name in ("ecc", *QR_INTEGERS):
        given = query.getall(name, [])
        if len(given) > 1:
            issues.append(Issue(("query", name), "give this parameter at most once", "value_error.duplicate"))
            continue
        if name == "ecc":
            if given and given[0].upper() not in ECC_LEVELS:
                issues.append(Issue(("query", name), "value is not a valid enumeration member; permitted: "
                                                     "'L', 'M', 'Q', 'H'", "type_error.enum"))
            elif given:
                values[name] = given[0].upper()
            continue
        low, high, default = QR_INTEGERS[name]
        raw = given[0] if given else str(default)
        if not _INTEGER.match(raw):
            issues.append(Issue(("query", name), "value is not a valid integer", "type_error.integer"))
        elif int(raw) < low:
            issues.append(Issue(("query", name), f"ensure this value is greater than or equal to {low}",
                                "value_error.number.not_ge"))
        elif int(raw) > high:
            issues.append(Issue(("query", name), f"ensure this value is less than or equal to {high}",
                                "value_error.number.not_le"))
        else:
            values[name] = int(raw)
    if issues:
        raise ValidationFailed(issues)
    return QrOptions(str(values["ecc"]), int(values["scale"]), int(values["border"]))


def render(url: str, kind: str, options: QrOptions) -> bytes:
    """The QR code of `url` as SVG or PNG; segno picks the smallest version and the best mask, and
    raises the error correction past `ecc` when the same size holds more."""
    code = segno.make(url, error=options.ecc, micro=False)
    out = io.BytesIO()
    code.save(out, kind=kind, scale=options.scale, border=options.border)
    return out.getvalue()


def _qr_handler(prefix: str, link: LinkKind, kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def qr_code(request: web.Request) -> web.Response:
        """The QR code of a link: options first (no I/O), then the link checked as opening checks it."""
        options = qr_options(request.query)
        token = request.match_info["token"]
        await link.check(request.app, token)
        url = f"{request.app[SETTINGS].public_base_url}/{prefix}/{token}"
        return web.Response(body=render(url, kind, options), content_type=FORMATS[kind], headers=_NO_STORE)

    return qr_code


def qr_path(prefix: str, kind: str) -> str:
    return f"/{prefix}/{{token}}/qr.{kind}"


def _routes() -> web.RouteTableDef:
    """An SVG and a PNG route per kind of link."""
    table = web.RouteTableDef()
    for prefix, link in KINDS.items():
        for kind in FORMATS:
            table.get(qr_path(prefix, kind))(_qr_handler(prefix, link, kind))
    return table


routes = _routes()
