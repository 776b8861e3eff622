"""The declared encoding, checked over the WHOLE file: a bad byte far down is refused as a bad
byte near the top is, at its physical line (never its content)."""

from __future__ import annotations

from pathlib import Path

from ctdc_harmonizer.errors import ExtractError

CHUNK_BYTES = 8 * 1024 * 1024  # decoded a slice at a time: the text is never held whole


def python_codec(encoding: str) -> str:
    """Python's codec for a declared encoding; UTF-8 may start with a byte-order mark (Excel's
    'CSV UTF-8'), which pyarrow skips and Python must be told to."""
    return "utf-8-sig" if encoding.lower().replace("_", "-") in {"utf-8", "utf8"} else encoding


def check_encoding(partner: str, path: Path, data: bytes, encoding: str) -> None:
    """Raise a located ExtractError at the first line holding bytes that are not `encoding`.

    An encoding that writes a line break as the byte '\\n' (UTF-8, Latin-1, cp1252: every one
    partners use) is decoded in slices cut after a line break, so no character is split; any
    other is decoded whole. An unknown encoding is left to the reader (its own error)."""
    codec = python_codec(encoding)
    try:
        ascii_breaks = "\n".encode(codec) == b"\n"
    except LookupError:
        return
    view = memoryview(data)
    start = 0
    while start < len(data):
        end = len(data)
        if ascii_breaks and end - start > CHUNK_BYTES:
            cut = data.rfind(b"\n", start, start + CHUNK_BYTES)
            end = cut + 1 if cut >= start else end
        try:
            str(view[start:end], codec if start == 0 else codec.replace("-sig", ""))
        except UnicodeDecodeError as exc:
            line = data.count(b"\n", 0, start + exc.start) + 1
            problem = f"not readable as {encoding}"
            raise ExtractError(partner, path.name, problem, row=line) from None
        start = end
