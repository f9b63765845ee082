"""Lines of a file read with a byte cap: a line longer than the cap is skipped without being held.

`bounded_lines` reads each line with `readline(cap + 1)`; a line that does not end within
that many bytes is too long, and the rest of it is read (and thrown away) a chunk at a
time up to its newline, so memory stays within cap + one chunk however long the line is
(a 50 MB line costs 1 MiB, not the ~20 GB its tokenization would). The byte counts it
yields let a caller stop after the first N bytes of a file (`rlvr validate` on a huge file).
"""

from __future__ import annotations

from typing import BinaryIO, Iterator

SKIP_CHUNK = 1 << 16  # bytes read at a time while skipping the rest of a too-long line


def bounded_lines(f: BinaryIO, cap: int) -> Iterator[tuple[int, bytes | None, int]]:
    """(line number from 1, the line's bytes or None when it is longer than `cap` bytes, the
    bytes it took in the file) for each line of the binary file `f`.

    >>> import io
    >>> [(n, line, size) for n, line, size in bounded_lines(io.BytesIO(b"ab\\n" + b"x" * 10 + b"\\nc"), 4)]
    [(1, b'ab\\n', 3), (2, None, 11), (3, b'c', 1)]
    """
    lineno = 0
    while True:
        raw = f.readline(cap + 1)
        if not raw:
            return
        lineno += 1
        if len(raw) <= cap or raw.endswith(b"\n"):
            yield lineno, raw, len(raw)
            continue
        size = len(raw)
        del raw
        size += _skip_to_newline(f)
        yield lineno, None, size


def _skip_to_newline(f: BinaryIO) -> int:
    """Read up to and including the next newline (or the end of the file); the bytes read."""
    size = 0
    while True:
        chunk = f.readline(SKIP_CHUNK)
        size += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return size
