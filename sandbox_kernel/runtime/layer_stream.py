"""A layer blob read in one pass, however it arrives (a file, an HTTP response)::

    blob bytes --sha256--> the blob digest (the manifest's "digest")
      gzip | zstd | plain (xz, bzip2 for rootfs tarballs), told apart by magic bytes
    tar bytes  --sha256--> the diff_id (the config's rootfs.diff_ids)

and tarfile's headers read with what they may hold in memory bounded
(BoundedTarInfo).  layers.py unpacks the members this stream yields; the
rules for what a member may be are there.

The bottom of the layer code: imports nothing of the project.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from collections.abc import Callable

CHUNK = 1 << 20
GZIP_MAGIC, ZSTD_MAGIC = b"\x1f\x8b", b"\x28\xb5\x2f\xfd"
XZ_MAGIC, BZIP2_MAGIC = b"\xfd7zXZ\x00", b"BZh"   # rootfs tarballs (.tar.xz, .tar.bz2)
HEADER_BYTES = 1 << 20   # a pax or GNU long-name header, and all global pax headers together
HEADER_CHAIN = 16        # extended headers before one member (tarfile reads them recursively)
SPARSE_EXTENTS = 1 << 16 # extents of a sparse member's map

Progress = Callable[[int], None]   # called with the number of blob bytes just read


class LayerError(ValueError):
    """An archive that cannot become a layer; the message names the member."""


class BoundedTarInfo(tarfile.TarInfo):
    """tarfile's TarInfo with what it reads into memory bounded: tarfile reads
    an extended header (pax, GNU long name) whole, a sparse map whole, and a
    chain of extended headers by recursion.  A gzip of 1 MiB can hold a pax
    header of 1 GiB; each of these is a LayerError here instead."""

    _EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE,
                 tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE)

    def _proc_member(self, tarfile_):
        if self.type not in self._EXTENDED:
            return super()._proc_member(tarfile_)
        chain = getattr(tarfile_, "_sbk_chain", 0) + 1
        globals_ = getattr(tarfile_, "_sbk_global_bytes", 0) + (self.size if self.type == tarfile.XGLTYPE else 0)
        if self.size > HEADER_BYTES or globals_ > HEADER_BYTES:
            raise LayerError(f"an extended tar header of {self.size} bytes (at most {HEADER_BYTES})")
        if chain > HEADER_CHAIN:
            raise LayerError(f"more than {HEADER_CHAIN} extended tar headers before one member")
        tarfile_._sbk_chain, tarfile_._sbk_global_bytes = chain, globals_
        try:
            return super()._proc_member(tarfile_)
        finally:
            tarfile_._sbk_chain = chain - 1

    def _proc_sparse(self, tarfile_):
        """An old GNU sparse member ('S'): its map, at most SPARSE_EXTENTS long."""
        structs, isextended, origsize = self._sparse_structs
        del self._sparse_structs
        while isextended:
            if len(structs) > SPARSE_EXTENTS:
                raise LayerError(f"sparse member {self.name!r}: more than {SPARSE_EXTENTS} extents")
            buf = tarfile_.fileobj.read(tarfile.BLOCKSIZE)
            if len(buf) < tarfile.BLOCKSIZE:
                raise tarfile.ReadError("unexpected end of data in a sparse map")
            for pos in range(0, 21 * 24, 24):
                try:
                    offset, numbytes = tarfile.nti(buf[pos:pos + 12]), tarfile.nti(buf[pos + 12:pos + 24])
                except ValueError:
                    break
                if offset and numbytes:
                    structs.append((offset, numbytes))
            isextended = bool(buf[504])
        self.sparse = structs
        self.offset_data = tarfile_.fileobj.tell()
        tarfile_.offset = self.offset_data + self._block(self.size)
        self.size = origsize
        return self

    def _proc_gnusparse_10(self, next_, pax_headers, tarfile_):
        """A pax sparse member (format 1.0): its map, at most SPARSE_EXTENTS long."""
        buf = tarfile_.fileobj.read(tarfile.BLOCKSIZE)
        fields, buf = buf.split(b"\n", 1)
        if not fields.isdigit() or int(fields) > SPARSE_EXTENTS:
            raise LayerError(f"sparse member: a map of {fields[:20]!r} extents (at most {SPARSE_EXTENTS})")
        numbers: list[int] = []
        while len(numbers) < int(fields) * 2:
            if b"\n" not in buf:
                more = tarfile_.fileobj.read(tarfile.BLOCKSIZE)
                if not more or len(buf) > 64:
                    raise tarfile.ReadError("a malformed sparse map")
                buf += more
            number, buf = buf.split(b"\n", 1)
            if not number.isdigit():
                raise tarfile.ReadError("a malformed sparse map")
            numbers.append(int(number))
        next_.offset_data = tarfile_.fileobj.tell()
        next_.sparse = list(zip(numbers[::2], numbers[1::2]))


class Hashing(io.RawIOBase):
    """A reader that hashes (and counts) what passes through it."""

    def __init__(self, source, progress: Progress | None = None):
        self.source, self.progress = source, progress
        self.sha256 = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.source.read(len(buffer))
        if not data:
            return 0
        buffer[:len(data)] = data
        self.sha256.update(data)
        self.count += len(data)
        if self.progress is not None:
            self.progress(len(data))
        return len(data)

    def drain(self) -> None:
        while self.read(CHUNK):
            pass

    def digest(self) -> str:
        return "sha256:" + self.sha256.hexdigest()


class Counting(Hashing):
    """The tar of an uncompressed blob: the blob's hash is its hash too."""

    def __init__(self, source, blob: Hashing):
        super().__init__(source)
        self.blob = blob

    def readinto(self, buffer) -> int:
        data = self.source.read(len(buffer))
        buffer[:len(data)] = data
        self.count += len(data)
        return len(data)

    def digest(self) -> str:
        return self.blob.digest()     # read to the end by then (unpack drains both)


def decompressed(blob: io.BufferedReader):
    """The tar stream inside ``blob``: gzip and zstd by their magic bytes."""
    head = blob.peek(6)[:6]
    if head.startswith(GZIP_MAGIC):
        return gzip.GzipFile(fileobj=blob, mode="rb")
    if head.startswith(XZ_MAGIC):
        import lzma
        return lzma.LZMAFile(blob)
    if head.startswith(BZIP2_MAGIC):
        import bz2
        return bz2.BZ2File(blob)
    if head.startswith(ZSTD_MAGIC):
        try:
            import zstandard
        except ImportError:
            raise LayerError("this layer is zstd-compressed and the zstandard package is not "
                             "installed: pip install zstandard") from None
        return zstandard.ZstdDecompressor().stream_reader(blob, read_across_frames=True)
    return blob


def format_errors() -> tuple[type[BaseException], ...]:
    """What a truncated or corrupt tar, gzip or zstd stream raises."""
    import zlib
    import lzma
    errors: list = [tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, lzma.LZMAError]
    try:
        import zstandard
        errors.append(zstandard.ZstdError)
    except ImportError:
        pass
    return tuple(errors)


def check_match(what: str, expected: str | None, found: str) -> None:
    if expected and expected != found:
        raise LayerError(f"{what} digest mismatch: expected {expected}, got {found} "
                         f"(a corrupt or tampered file?)")
