#!/usr/bin/env python3
"""Writes the hostile PNGs of the hardening review into fuzz/regressions/png/, where
`cargo test -p cachedit-fuzz` replays them under the fuzzers' 512 MiB memory cap.

* ``huge-dimensions.bin``: a 2 KB PNG whose header declares 6 × 4,060,086,313 RGB pixels
  (reading it once asked for 73 GB).
* ``text-bomb.bin``: a PNG under 1 MB with 16 zTXt chunks of other keys, each inflating to
  60 MiB (reading every text chunk once took ``cachedit restore`` past 1 GB).

Standard library only:  python3 tools/make_hostile_inputs.py
"""
import struct
import zlib
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "fuzz" / "regressions" / "png"


def chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png(width: int, height: int, extra: list, rows: bytes) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr)
    for c in extra:
        body += c
    body += chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    # A couple of rows of real data; the header claims four billion.
    huge = png(6, 4_060_086_313, [], b"\x00" + b"\x10" * 18 + b"\x00" + b"\x20" * 18)
    huge += b"\x00" * max(0, 2048 - len(huge))
    (OUT / "huge-dimensions.bin").write_bytes(huge)

    bomb_text = zlib.compress(b"a" * (60 << 20), 9)
    chunks = [chunk(b"zTXt", f"note{i}".encode() + b"\x00\x00" + bomb_text) for i in range(16)]
    workflow = b"cachedit.workflow\x00(version: 1, nodes: [], links: [])"
    bomb = png(2, 2, chunks + [chunk(b"tEXt", workflow)], b"\x00" + b"\x00" * 6 + b"\x00" + b"\x00" * 6)
    assert len(bomb) < 1 << 20, len(bomb)
    (OUT / "text-bomb.bin").write_bytes(bomb)
    print(f"wrote {OUT}/huge-dimensions.bin ({len(huge)} bytes), text-bomb.bin ({len(bomb)} bytes)")


if __name__ == "__main__":
    main()
