#!/usr/bin/env python3
"""The README's screenshot: a committed page's first screen (1400 x 900 px) in the browser test's
headless Chromium, with its flags, stored as a small PNG.

    python3 scripts/first-screen.py [PAGE] [OUT]   # plots/h200-methods-synthetic.html docs/first-screen.png

Chromium writes an RGB PNG; the page's first screen is text in a few colours, so its colours are
rounded to 16 levels a channel and, when that leaves at most 256, stored as a palette PNG (about a
third of the bytes, no visible change). Standard library only.
"""

from __future__ import annotations

import shutil
import struct
import sys
import tempfile
import zlib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.test_plot_browser import BROWSERS, FIRST_SCREEN_PX, open_page  # noqa: E402  (the test's browser)

WIDTH = 1400
LIMIT = 200_000  # bytes


def read_png(data: bytes) -> tuple[int, int, int, list[bytearray]]:
    """An 8-bit RGB or RGBA, non-interlaced PNG (what Chromium writes) -> width, height, bytes per
    pixel, unfiltered rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    i, idat = 8, b""
    while i < len(data):
        n, kind = struct.unpack(">I4s", data[i:i + 8])
        body = data[i + 8:i + 8 + n]
        if kind == b"IHDR":
            w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        i += 12 + n
    assert depth == 8 and color in (2, 6) and interlace == 0, "not an 8-bit RGB(A) PNG"
    bpp = 4 if color == 6 else 3
    raw, stride, rows, prev, p = zlib.decompress(idat), w * bpp, [], bytearray(w * bpp), 0
    for _ in range(h):
        kind, line = raw[p], bytearray(raw[p + 1:p + 1 + stride])
        p += 1 + stride
        for x in range(stride):  # PNG's five filters, undone
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(line)
        prev = line
    return w, h, bpp, rows


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def small_png(w: int, h: int, bpp: int, rows: list[bytearray]) -> bytes:
    """Colours rounded to 16 levels a channel; a palette PNG if that leaves 256 or fewer, else RGB."""
    level = lambda v: min(255, (v + 8) // 17 * 17)  # noqa: E731
    pixels = [[tuple(level(v) for v in row[x * bpp:x * bpp + 3]) for x in range(w)] for row in rows]
    colours = sorted({p for row in pixels for p in row})
    head = b"\x89PNG\r\n\x1a\n"
    if len(colours) <= 256:
        index = {c: i for i, c in enumerate(colours)}
        raw = b"".join(b"\x00" + bytes(index[p] for p in row) for row in pixels)
        return (head + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
                + _chunk(b"PLTE", b"".join(bytes(c) for c in colours)) + _chunk(b"IDAT", zlib.compress(raw, 9))
                + _chunk(b"IEND", b""))
    raw = b"".join(b"\x00" + bytes(v for p in row for v in p) for row in pixels)
    return (head + _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b""))


def main() -> int:
    page = Path(sys.argv[1] if len(sys.argv) > 1 else REPO / "plots" / "h200-methods-synthetic.html")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else REPO / "docs" / "first-screen.png")
    exe = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    if exe is None:
        print("first-screen: no chromium (apt-get install -y chromium)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        got = open_page(exe, page, f"--screenshot={shot}", f"--window-size={WIDTH},{FIRST_SCREEN_PX}")
        if got.returncode != 0 or not shot.is_file():
            print(f"first-screen: chromium failed: {got.stderr[-500:]}", file=sys.stderr)
            return 2
        data = small_png(*read_png(shot.read_bytes()))
    if len(data) > LIMIT:
        print(f"first-screen: {len(data):,} bytes, over {LIMIT:,}", file=sys.stderr)
        return 2
    out.write_bytes(data)
    print(f"wrote {out} ({len(data):,} bytes)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
