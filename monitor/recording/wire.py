"""Byte-level building blocks of a recording frame: varints, zigzag, strings.

Integers are unbounded (a u64 counter, a delta between two of them, an io.max rate of 2^64-1):
LEB128 varints carry any of them exactly, and a zero delta costs one byte that zlib then
folds away. Strings are UTF-8 with surrogateescape, so a cgroup directory whose name is not
valid UTF-8 (os.scandir hands those back escaped) comes back as the same ``str``.
"""

from __future__ import annotations

from collections.abc import Iterable


class WireError(ValueError):
    """A frame body does not parse (the CRC matched, so the writer and reader disagree)."""


def zigzag(n: int) -> int:
    """Signed to unsigned, small magnitudes first: 0, -1, 1, -2, ... -> 0, 1, 2, 3, ..."""
    return n << 1 if n >= 0 else ((-n) << 1) - 1


def unzigzag(z: int) -> int:
    return -((z + 1) >> 1) if z & 1 else z >> 1


class Writer:
    """An append-only frame body."""

    __slots__ = ("buf",)

    def __init__(self) -> None:
        self.buf = bytearray()

    def uint(self, n: int) -> None:
        buf = self.buf
        if n < 0x80:
            buf.append(n)
            return
        while n >= 0x80:
            buf.append((n & 0x7F) | 0x80)
            n >>= 7
        buf.append(n)

    def sint(self, n: int) -> None:
        self.uint(n << 1 if n >= 0 else ((-n) << 1) - 1)

    def sints(self, values: Iterable[int]) -> None:
        """Many signed integers; the common zero costs one append."""
        buf = self.buf
        for n in values:
            if n == 0:
                buf.append(0)
            else:
                self.uint(n << 1 if n > 0 else ((-n) << 1) - 1)

    def str(self, text: str) -> None:
        data = text.encode("utf-8", "surrogateescape")
        self.uint(len(data))
        self.buf += data

    def blob(self, data: bytes) -> None:
        self.uint(len(data))
        self.buf += data


class Reader:
    """Reads back what Writer wrote; WireError when the body ends early."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def uint(self) -> int:
        data, pos = self.data, self.pos
        try:
            byte = data[pos]
            pos += 1
            if byte < 0x80:
                self.pos = pos
                return byte
            n, shift = byte & 0x7F, 7
            while True:
                byte = data[pos]
                pos += 1
                n |= (byte & 0x7F) << shift
                if byte < 0x80:
                    self.pos = pos
                    return n
                shift += 7
        except IndexError:
            raise WireError(f"frame body ends inside a number at byte {self.pos}") from None

    def sint(self) -> int:
        return unzigzag(self.uint())

    def sints(self, count: int) -> list[int]:
        out = []
        for _ in range(count):
            z = self.uint()
            out.append(-((z + 1) >> 1) if z & 1 else z >> 1)
        return out

    def str(self) -> str:
        return self.blob().decode("utf-8", "surrogateescape")

    def blob(self) -> bytes:
        size = self.uint()
        end = self.pos + size
        if end > len(self.data):
            raise WireError(f"frame body ends inside a {size}-byte string at byte {self.pos}")
        out = bytes(self.data[self.pos : end])
        self.pos = end
        return out

    def done(self) -> None:
        if self.pos != len(self.data):
            raise WireError(f"{len(self.data) - self.pos} unexpected bytes at the end of a frame")
