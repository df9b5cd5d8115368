"""QR codes of links, for print: `/c/<token>/qr.svg`, `/l/<token>/qr.png`, ... answer the link's URL
(`PUBLIC_BASE_URL/c/<token>`, as the API hands it out) as a QR code.

zxing-cpp's writer (libzint in C) encodes the symbol: the smallest version for the level asked (raised
when that version holds more), the mask of lowest penalty by ISO/IEC 18004's rules, in ~0.2-0.8 ms
where segno's pure Python needed ~9. Its SVG and PNG are not ours to shape (a fixed quiet zone, a
<desc>), so both are drawn here from its one-pixel-a-module matrix: the SVG as one path of runs, the
PNG one bit a pixel with rows built by bytes methods (C). The largest QR code at the largest options
takes ~18 ms as PNG, on the event loop: the writer holds the GIL, a thread would not help.

The token is checked by the same functions as opening it (service/web/opening.py): a forged one is
404 before any database query, an expired one or a survey not in progress is 410. Only the checks:
showing the code is not an open, so nothing an open does (counting it) happens here.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import zxingcpp
from aiohttp import web
from multidict import MultiMapping

from ..core.errors import Issue, ValidationFailed
from ..core.rules import Whole, not_one_of
from . import opening
from .jsonio import PERSONAL
from .keys import SETTINGS
from .query import DIGITS, REPEATED, read_query_int


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
# name -> its rule: at most 20 px a module and 10 of border, so the largest code a link can give
# stays a few MB of PNG work, never a memory spike
QR_INTEGERS: dict[str, Whole] = {"scale": Whole(1, 20, 4), "border": Whole(0, 10, 4)}
# the token is in the image: no shared cache may keep it


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
    ecc = DEFAULT_ECC
    numbers = {name: rule.default for name, rule in QR_INTEGERS.items()}
    for name in ("ecc", *QR_INTEGERS):
        given = query.getall(name, [])
        if len(given) > 1:
            issues.append(REPEATED.at(("query", name)))
            continue
        if name == "ecc":
            if given and given[0].upper() not in ECC_LEVELS:
                issues.append(not_one_of(ECC_LEVELS).at(("query", name)))
            elif given:
                ecc = given[0].upper()
            continue
        if given:
            numbers[name], issue = read_query_int(given[0], name, QR_INTEGERS[name], DIGITS)
            if issue is not None:
                issues.append(issue)
    if issues:
        raise ValidationFailed(issues)
    scale, border = numbers["scale"], numbers["border"]
    assert scale is not None and border is not None  # read, or the rule's default
    return QrOptions(ecc, scale, border)


def _symbol(url: str, ecc: str, version: int = 0, mask: int | None = None) -> zxingcpp.Image:
    """zint's symbol (version 0: the smallest that holds `url`; mask None: the best of the eight)."""
    options: dict[str, str | int] = {"ecLevel": ecc}
    if version:
        options["version"] = version
    if mask is not None:
        options["dataMask"] = mask
    return zxingcpp.create_barcode(url, zxingcpp.BarcodeFormat.QRCode, **options).to_image(add_quiet_zones=False)


def modules(url: str, ecc: str) -> list[bytes]:
    """The symbol of `url`, quiet zone excluded: a row of bytes per module row, 0 dark and 255 light.

    The smallest version for level `ecc`, at the highest level that still fits that version (zint
    keeps a level it is given, so each higher one is tried at that version, with a fixed mask: a
    level that does not fit fails before any masking, in ~0.03 ms). Above a few dozen characters a
    higher level never fits the version a lower one needed, so a link's code is one encode, the
    eight masks scored once (~0.5 ms for a contact link's), and one refused try."""
    image = _symbol(url, ecc)
    version = (image.shape[0] - 17) // 4
    level = ecc
    for higher in ECC_LEVELS[ECC_LEVELS.index(ecc) + 1:]:
        try:
            _symbol(url, higher, version, mask=0)
        except ValueError:  # "Input too long for Version <version>-<higher>": no higher one fits either
            break
        level = higher
    if level != ecc:
        image = _symbol(url, level, version)
    height, width = image.shape
    # zxingcpp.Image has the buffer protocol; its stub (zxingcpp.pyi) does not declare __buffer__
    pixels = memoryview(image).tobytes()  # type: ignore[arg-type]
    return [pixels[y * width:(y + 1) * width] for y in range(height)]


# a row of the symbol as its runs of one colour; drawn as `h<n>` (dark) and `m<n> 0` (light) from
# tables, so a code costs no string formatting per run
_RUNS = re.compile(rb"\x00+|\xff+")
_LONGEST_ROW = 177  # version 40
_DARK = [f"h{n}" for n in range(_LONGEST_ROW + 1)]
_LIGHT = [f"m{n} 0" for n in range(_LONGEST_ROW + 1)]


def svg(rows: list[bytes], scale: int, border: int) -> bytes:
    """One stroked path along the middle of each row (a 1-unit stroke draws its dark runs), scaled
    by a transform: the shape segno draws, small and exact at any size."""
    size = (len(rows) + 2 * border) * scale
    parts = []
    for y, row in enumerate(rows):
        parts.append(f"M{border} {y + border}.5")
        parts += [_DARK[len(run)] if run[0] == 0 else _LIGHT[len(run)] for run in _RUNS.findall(row.rstrip(b"\xff"))]
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="{size}" '
            f'height="{size}"><path transform="scale({scale})" stroke="#000" d="{"".join(parts)}"/></svg>\n'
            ).encode()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(rows: list[bytes], scale: int, border: int) -> bytes:
    """A greyscale PNG of one bit a pixel (1 light): each module row widened to pixels by bytes
    replacements, read as a binary number, and repeated `scale` times, each with filter byte 0."""
    width = (len(rows) + 2 * border) * scale
    stride = (width + 7) // 8
    margin = b"1" * (border * scale)
    padding = b"1" * (stride * 8 - width)
    dark, light = b"0" * scale, b"1" * scale
    blank = b"\x00" + int(b"1" * (stride * 8), 2).to_bytes(stride, "big")
    lines = [blank * (border * scale)]
    for row in rows:
        bits = margin + row.replace(b"\x00", dark).replace(b"\xff", light) + margin + padding
        lines.append((b"\x00" + int(bits, 2).to_bytes(stride, "big")) * scale)
    lines.append(blank * (border * scale))
    header = struct.pack(">IIBBBBB", width, width, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(b"".join(lines)))
            + _chunk(b"IEND", b""))


def render(url: str, kind: str, options: QrOptions) -> bytes:
    """The QR code of `url` as SVG or PNG."""
    rows = modules(url, options.ecc)
    return (svg if kind == "svg" else png)(rows, options.scale, options.border)


def _qr_handler(prefix: str, link: LinkKind, kind: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def qr_code(request: web.Request) -> web.Response:
        """The QR code of a link: options first (no I/O), then the link checked as opening checks it."""
        options = qr_options(request.query)
        token = request.match_info["token"]
        await link.check(request.app, token)
        url = f"{request.app[SETTINGS].public_base_url}/{prefix}/{token}"
        return web.Response(body=render(url, kind, options), content_type=FORMATS[kind], headers=PERSONAL)

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
