"""Reading the service's QR codes back: its PNG and SVG turned into pixels, decoded by zxing-cpp.

The PNG reader is PNG's own definition (chunks, zlib, the five row filters) for the greyscale
images the service writes; the SVG reader draws its one path of horizontal runs (`M`, `m`, `h`).
Anything else in either fails loudly rather than decoding something else.
"""

from __future__ import annotations

import re
import struct
import xml.etree.ElementTree as ET
import zlib
from dataclasses import dataclass

import zxingcpp

SVG_NS = "{http://www.w3.org/2000/svg}"


@dataclass(frozen=True)
class Image:
    """8-bit greyscale pixels, row by row (0 dark, 255 light)."""

    width: int
    height: int
    pixels: bytes

    def dark(self, x: int, y: int) -> bool:
        return self.pixels[y * self.width + x] < 128


@dataclass(frozen=True)
class Decoded:
    text: str
    ec_level: str


def decode(image: Image) -> Decoded:
    """The one QR code in the image, or AssertionError."""
    view = memoryview(image.pixels).cast("B", (image.height, image.width))
    found = zxingcpp.read_barcodes(view, formats=zxingcpp.BarcodeFormats(zxingcpp.BarcodeFormat.QRCode))
    assert len(found) == 1, f"{len(found)} QR codes found"
    assert found[0].valid
    return Decoded(found[0].text, found[0].ec_level)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    return a if pa <= pb and pa <= pc else b if pb <= pc else c


def png_image(data: bytes) -> Image:
    """A non-interlaced greyscale PNG (bit depth 1-8), every chunk's CRC checked."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, bytearray(), None
    while True:
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert zlib.crc32(kind + chunk) == crc, f"bad CRC in {kind!r}"
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    assert pos == len(data), "bytes after IEND"
    assert header is not None
    width, height, depth, colour, _compression, _filter, interlace = header
    assert colour == 0 and interlace == 0 and depth in (1, 2, 4, 8), header
    raw = zlib.decompress(bytes(idat))
    stride = (width * depth + 7) // 8
    assert len(raw) == height * (stride + 1)
    top = (1 << depth) - 1
    pixels = bytearray()
    previous = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        method, line = raw[start], bytearray(raw[start + 1:start + 1 + stride])
        for i in range(stride):
            a, b, c = (line[i - 1] if i else 0), previous[i], (previous[i - 1] if i else 0)
            line[i] = (line[i] + (0, a, b, (a + b) // 2, _paeth(a, b, c))[method]) & 0xFF
        for x in range(width):
            bit = x * depth
            pixels.append(((line[bit // 8] >> (8 - depth - bit % 8)) & top) * 255 // top)
        previous = line
    return Image(width, height, bytes(pixels))


@dataclass(frozen=True)
class Svg:
    width: int
    height: int
    scale: int
    modules: list[list[bool]]  # the drawn grid, border included, one cell per module


def svg_modules(data: bytes) -> Svg:
    """The modules the service's SVG draws: one stroked path of horizontal runs, scaled by `transform`."""
    root = ET.fromstring(data)
    assert root.tag == f"{SVG_NS}svg", root.tag
    (path,) = list(root)
    assert path.tag == f"{SVG_NS}path" and path.get("stroke") == "#000", path.attrib
    width, height = int(root.get("width", "")), int(root.get("height", ""))
    transform = path.get("transform")
    scale = int(re.fullmatch(r"scale\((\d+)\)", transform)[1]) if transform else 1  # type: ignore[index]
    assert width == height and width % scale == 0
    size = width // scale
    grid = [[False] * size for _ in range(size)]
    d = path.get("d", "")
    commands = re.findall(r"([Mmh])(-?\d+(?:\.\d+)?)(?: (-?\d+(?:\.\d+)?))?", d)
    assert "".join(f"{c}{a}{' ' + b if b else ''}" for c, a, b in commands) == d, "a command not read"
    x = y = 0.0
    for command, a, b in commands:
        if command == "M":
            x, y = float(a), float(b)
        elif command == "m":
            x, y = x + float(a), y + float(b)
        else:  # a run of dark modules on the row the stroke's centre line is on
            row, run = int(y), int(a)
            assert y - row == 0.5 and x == int(x) and run > 0
            for column in range(int(x), int(x) + run):
                grid[row][column] = True
            x += run
    return Svg(width, height, scale, grid)


def modules_image(modules: list[list[bool]], pixels_per_module: int = 4) -> Image:
    """Pixels of a module grid, for the decoder."""
    out = bytearray()
    for row in modules:
        line = b"".join((b"\x00" if dark else b"\xff") * pixels_per_module for dark in row)
        out += line * pixels_per_module
    size = len(modules) * pixels_per_module
    return Image(size, size, bytes(out))


def png_modules(image: Image, scale: int) -> list[list[bool]]:
    """The module grid of a PNG drawn `scale` pixels a module (each module read at its centre)."""
    size = image.width // scale
    return [[image.dark(x * scale + scale // 2, y * scale + scale // 2) for x in range(size)] for y in range(size)]
