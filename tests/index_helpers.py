"""Helpers for the index tests: the on-disk log frame format, read independently of the engine.

A log segment is ``index/log-<16 hex gen>``; it is a sequence of frames
``u32 LE payload length | u32 LE crc32c(payload) | payload`` and starts with a header frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

FRAME_HEADER = 8


def _crc32c_table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as used by the log frames."""
    crc = 0xFFFFFFFF
    for b in data:
        crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283, "CRC-32C check value"


@dataclass(frozen=True)
class Frame:
    start: int  # offset of the length field
    length: int  # payload length
    crc: int

    @property
    def payload_start(self) -> int:
        return self.start + FRAME_HEADER

    @property
    def end(self) -> int:
        return self.payload_start + self.length


def parse_frames(path: str | Path) -> tuple[list[Frame], int]:
    """The valid frames of a segment, and the offset where valid frames stop (the file size
    when the whole file is well formed)."""
    data = Path(path).read_bytes()
    frames: list[Frame] = []
    pos = 0
    while pos + FRAME_HEADER <= len(data):
        length, crc = struct.unpack_from("<II", data, pos)
        end = pos + FRAME_HEADER + length
        if end > len(data) or crc32c(data[pos + FRAME_HEADER : end]) != crc:
            break
        frames.append(Frame(pos, length, crc))
        pos = end
    return frames, pos


def frame_payload(path: str | Path, frame: Frame) -> bytes:
    return Path(path).read_bytes()[frame.payload_start : frame.end]


def log_segments(root: str | Path) -> list[Path]:
    """The log segments of a store, oldest generation first."""
    return sorted(Path(root, "index").glob("log-*"), key=lambda p: int(p.name[4:], 16))


def snapshots(root: str | Path) -> list[Path]:
    return sorted(
        (p for p in Path(root, "index").glob("snap-*") if _is_hex_suffix(p.name[5:])),
        key=lambda p: int(p.name[5:], 16),
    )


def _is_hex_suffix(s: str) -> bool:
    try:
        int(s, 16)
    except ValueError:
        return False
    return len(s) == 16


def last_log_segment(root: str | Path) -> Path:
    segs = log_segments(root)
    assert segs, f"no log segment in {root}/index: {sorted(Path(root, 'index').iterdir())}"
    return segs[-1]


def assert_segments_well_formed(root: str | Path) -> None:
    """Every log segment is a clean sequence of frames up to its end: no torn or corrupt
    tail is left behind (recovery truncates it)."""
    for seg in log_segments(root):
        frames, good_end = parse_frames(seg)
        size = seg.stat().st_size
        assert good_end == size, (
            f"{seg.name}: valid frames end at {good_end} but the file is {size} bytes "
            f"({len(frames)} good frames): a bad tail was left in place"
        )


def flip_byte(path: str | Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def truncate(path: str | Path, size: int) -> None:
    with open(path, "r+b") as f:
        f.truncate(size)


def typed(v: object) -> tuple[type, object]:
    """A label value with its type: 1, 1.0 and True are three different label values."""
    return (type(v), v)


def typed_dict(d: dict) -> dict:
    return {k: typed(v) for k, v in d.items()}
