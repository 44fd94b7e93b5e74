""".npz archives (numpy's savez layout: a zip of .npy members), read without trusting them.

Every member's .npy header is parsed and checked when the archive is opened, before any array is
allocated: the bytes its shape and dtype need must be exactly the bytes the member holds. Stored
(uncompressed) members are memory-mapped from the archive; compressed ones are inflated within
`MAX_INFLATE_RATIO` times their compressed size, into buffers that grow with the data actually
inflated, never with what a header claims. Object arrays (pickles) are refused. (numpy.load
allocates what a member's header claims before reading it: a 2 MB archive claiming 2 GiB costs
2 GiB; benchmarks/convert_benchmark.py measures both.)
"""

from __future__ import annotations

import dataclasses
import math
import os
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import IO, Any

import numpy as np

from vit_common.fileio import atomic_write, open_regular, regular_file_size

MAX_MEMBERS = 100_000
MAX_INFLATE_RATIO = 1100  # deflate cannot expand data more than 1032x
# float weights barely compress (~1.1x); only constant arrays (a zero bias) compress far. What all
# compressed members may inflate to, together: this many times their compressed bytes, plus a slack
# for such small constant arrays. A bomb is refused when the archive is opened, before inflating.
MAX_TOTAL_INFLATE_RATIO = 16
INFLATE_SLACK = 64 * 2**20
_MAX_NPY_HEADER = 65_536
_READ_CHUNK = 16 * 2**20


@dataclasses.dataclass(frozen=True)
class _Member:
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran: bool
    data_offset: int  # in the archive (stored members) or in the inflated member
    member_start: int  # where the member's bytes start in the archive (stored members)


class NpzArchive(Mapping):
    """{name: numpy array} of an .npz file; `shapes` without reading any array."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.size = regular_file_size(self.path, ".npz file")
        self.members: dict[str, _Member] = {}
        with open_regular(self.path, ".npz file") as f:
            try:
                with zipfile.ZipFile(f) as zf:
                    infos = zf.infolist()
                    if len(infos) > MAX_MEMBERS:
                        raise ValueError(f"{len(infos)} members, over the limit of {MAX_MEMBERS}")
                    for info in infos:
                        if not info.filename.endswith(".npy") or info.is_dir():
                            raise ValueError(f"member {info.filename!r} is not a .npy array")
                        name = info.filename[:-len(".npy")]
                        if name in self.members:
                            raise ValueError(f"array {name!r} is stored twice")
                        self.members[name] = self._member(f, zf, info)
                    packed = [m.info for m in self.members.values() if m.info.compress_type != zipfile.ZIP_STORED]
                    inflated, deflated = sum(i.file_size for i in packed), sum(i.compress_size for i in packed)
                    if inflated > MAX_TOTAL_INFLATE_RATIO * deflated + INFLATE_SLACK:
                        raise ValueError(f"its compressed members claim to inflate {deflated:,} bytes to "
                                         f"{inflated:,} ({inflated / max(deflated, 1):,.0f}x): weights do not "
                                         f"compress like that (a decompression bomb?)")
            except ValueError as e:
                raise ValueError(f"{self.path}: not a usable .npz archive ({e})") from None
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, struct.error,
                    NotImplementedError, RuntimeError) as e:
                raise ValueError(f"{self.path}: not a readable .npz archive ({type(e).__name__}: "
                                 f"{e})") from None
        self.shapes = {k: m.shape for k, m in self.members.items()}

    def _member(self, f: IO[bytes], zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
        where = f"member {info.filename!r}"
        if info.flag_bits & 0x1:
            raise ValueError(f"{where} is encrypted")
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise ValueError(f"{where} is stored but its sizes differ ({info.compress_size} "
                                 f"vs {info.file_size})")
            f.seek(info.header_offset)
            local = f.read(30)
            if len(local) != 30 or local[:4] != b"PK\x03\x04":
                raise ValueError(f"{where}: bad local header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            start = info.header_offset + 30 + name_len + extra_len
            if start + info.file_size > self.size:
                raise ValueError(f"{where} claims {info.file_size:,} bytes past the end of the file")
            f.seek(start)
            shape, dtype, fortran, header = _npy_header(f, where)
            offset, member_start = start + header, start
        else:
            if info.file_size > MAX_INFLATE_RATIO * max(info.compress_size, 1):
                raise ValueError(f"{where} claims to inflate {info.compress_size:,} bytes to "
                                 f"{info.file_size:,} (over {MAX_INFLATE_RATIO}x)")
            with zf.open(info) as stream:
                shape, dtype, fortran, header = _npy_header(stream, where)
            offset, member_start = header, -1
        need = math.prod(shape) * dtype.itemsize
        if need != info.file_size - header:
            raise ValueError(f"{where}: its header claims {shape} {dtype} ({need:,} bytes) but the "
                             f"member holds {info.file_size - header:,} bytes of data")
        return _Member(info, shape, dtype, fortran, offset, member_start)

    def __getitem__(self, name: str) -> np.ndarray:
        m = self.members[name]
        try:
            arr = self._read(m)
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
            raise ValueError(f"{self.path}: array {name!r} is unreadable ({e})") from None
        # .npy has no bfloat16: such arrays come back as 2-byte voids (big_vision's convention)
        if arr.dtype == np.dtype("V2"):
            import ml_dtypes

            arr = arr.view(ml_dtypes.bfloat16)
        return arr

    def _read(self, m: _Member) -> np.ndarray:
        order = "F" if m.fortran else "C"
        count = math.prod(m.shape)
        if count == 0:
            return np.empty(m.shape, m.dtype, order=order)
        if m.info.compress_type == zipfile.ZIP_STORED:
            self._check_crc(m)
            return np.memmap(self.path, dtype=m.dtype, mode="r", offset=m.data_offset,
                             shape=m.shape, order=order)
        with open_regular(self.path, ".npz file") as f, zipfile.ZipFile(f) as zf, \
                zf.open(m.info) as stream:
            stream.read(m.data_offset)
            buf = bytearray()
            need = count * m.dtype.itemsize
            while len(buf) < need:  # grows with the data really inflated
                chunk = stream.read(min(_READ_CHUNK, need - len(buf)))
                if not chunk:
                    raise ValueError(f"truncated: {len(buf):,} of {need:,} bytes")
                buf += chunk
            if stream.read(1):  # reading to the end makes zipfile check the member's CRC-32
                raise ValueError("more data than its header claims")
        return np.frombuffer(buf, dtype=m.dtype).reshape(m.shape, order=order)

    def _check_crc(self, m: _Member) -> None:
        """A stored member's CRC-32 against the archive's directory (zipfile checks a compressed
        member's as it inflates it)."""
        crc, left = 0, m.info.file_size
        with open_regular(self.path, ".npz file") as f:
            f.seek(m.member_start)
            while left:
                chunk = f.read(min(_READ_CHUNK, left))
                if not chunk:
                    raise ValueError("truncated")
                crc, left = zlib.crc32(chunk, crc), left - len(chunk)
        if crc != m.info.CRC:
            raise ValueError(f"its CRC-32 is {crc:08x}, the archive says {m.info.CRC:08x}: the file is damaged")

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __contains__(self, name: object) -> bool:
        return name in self.members


def _npy_header(f: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran order, header length) of the .npy stream at `f`."""
    fmt = np.lib.format
    start = f.tell()  # archive files and zip member streams both tell their position
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=_MAX_NPY_HEADER)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, SyntaxError, TypeError, struct.error, EOFError) as e:
        raise ValueError(f"{where}: not a .npy array ({e})") from None
    if dtype.hasobject:
        raise ValueError(f"{where} holds Python objects (a pickle); refusing it")
    if len(shape) > 8 or any(s < 0 for s in shape):
        raise ValueError(f"{where}: malformed shape {shape}")
    return tuple(int(s) for s in shape), dtype, bool(fortran), f.tell() - start


def read_npz(path: str | os.PathLike) -> NpzArchive:
    return NpzArchive(path)


def write_npz(path: str | os.PathLike,
              arrays: Mapping[str, np.ndarray] | Sequence[tuple[str, Callable[[], np.ndarray]]], *,
              overwrite: bool = False, progress: Callable[[int], Any] | None = None) -> None:
    """An uncompressed .npz written by numpy.savez (no pickles: every array is numeric). `arrays`
    may be (name, function making the array) pairs. numpy's writer is within 1.5x of a streaming
    one in time and memory on an L/16 conversion (benchmarks/convert_benchmark.py), so it is used."""
    made = (dict(arrays) if isinstance(arrays, Mapping) else {name: make() for name, make in arrays})
    for name, arr in made.items():
        if np.asarray(arr).dtype.hasobject:
            raise ValueError(f"{path}: array {name!r} holds Python objects; refusing to pickle it")

    def write(f: IO[bytes]) -> None:
        np.savez(f, **made)
        if progress:
            progress(sum(np.asarray(a).nbytes for a in made.values()))

    atomic_write(path, write, overwrite=overwrite)
