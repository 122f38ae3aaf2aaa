"""Input sources: how the bytes of one input are identified, fingerprinted, sized, opened and split into ranges.

A ``Source`` is chosen per input when the data folder is listed (``core.discover``), by its name:
the first of ``DEFAULT_SOURCES`` (or of the sources plugins register, ``register_sources``) that
``matches`` it. Offsets, sizes and fingerprints are in the source's own bytes, the ones lines are
made of: a gzip file's are its decompressed bytes. The ledger (``core.ledger``), the reader
(``core.reader``), sample lines read back (``core.lines``) and the watcher's rescan all go through it.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import hashlib
import os
import stat
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar, Hashable, Protocol, Sequence

#: How many leading bytes identify a file's content, so a reused inode is still caught.
FINGERPRINT_BYTES = 1024


def digest(data: bytes | memoryview) -> str:
    """The hash a fingerprint is made of."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


class Handle(Protocol):
    """An open input, as the reader uses it: ``read`` forward and ``seek`` back within the last block read."""

    def read(self, size: int = -1) -> bytes: ...

    def seek(self, offset: int) -> int: ...

    def close(self) -> None: ...

    def __enter__(self) -> Handle: ...

    def __exit__(self, *exc: object) -> None: ...


@dataclass(frozen=True)
class Range:
    """Bytes ``start`` to ``end`` of an input (``end`` None: to its end), the unit of work a worker reads itself."""

    start: int
    end: int | None


class Source(Protocol):
    """One kind of input. Implementations are small stateless objects, so they travel to other processes."""

    #: What ``summary.json`` and the logs call it.
    name: ClassVar[str]
    #: Whether ``open`` at an offset and short reads there are cheap (a plain file), so that sample
    #: lines may be read back from known line starts and a file may be split into many ranges.
    seekable: ClassVar[bool]
    #: Whether a file of this kind is usually a copy made of another (a compressed rotated log):
    #: the ledger then also knows it by its content, not only by its device and inode.
    copies: ClassVar[bool]

    def matches(self, name: str) -> bool:
        """Whether this source reads the input named ``name`` (relative to the data folder)."""
        ...

    def identify(self, path: str | os.PathLike[str]) -> os.stat_result:
        """Who the input is (``st_dev``, ``st_ino``) as it is now; ``OSError`` if it cannot be read."""
        ...

    def size(self, path: str | os.PathLike[str], info: os.stat_result | None = None) -> int:
        """Its length in the source's bytes; ``OSError`` if it cannot be read. ``info`` is what
        ``identify`` gave, when at hand."""
        ...

    def fingerprint(self, path: str | os.PathLike[str], length: int, start: int = 0) -> str:
        """A hash of ``length`` of its bytes from ``start``."""
        ...

    def open(self, path: str | os.PathLike[str], offset: int) -> Handle:
        """Open it for reading at ``offset``."""
        ...

    def split(self, path: str | os.PathLike[str], start: int, size: int, range_bytes: int) -> list[Range]:
        """Bytes ``start`` to ``size`` as ranges of about ``range_bytes``, in order."""
        ...


class PlainFile:
    """A regular file, read as it is: seekable, so split into as many ranges as wanted."""

    name: ClassVar[str] = "plain"
    seekable: ClassVar[bool] = True
    copies: ClassVar[bool] = False

    def matches(self, name: str) -> bool:
        return True

    def identify(self, path: str | os.PathLike[str]) -> os.stat_result:
        info = os.stat(path)
        check_regular(path, info)
        return info

    def size(self, path: str | os.PathLike[str], info: os.stat_result | None = None) -> int:
        return (info or os.stat(path)).st_size

    def fingerprint(self, path: str | os.PathLike[str], length: int, start: int = 0) -> str:
        with open_regular(path) as handle:
            return digest(os.pread(handle.fileno(), length, start))

    def open(self, path: str | os.PathLike[str], offset: int) -> Handle:
        handle = open_regular(path)  # unbuffered: reads go straight into each chunk's bytes
        handle.seek(offset)
        return handle  # type: ignore[return-value]

    def split(self, path: str | os.PathLike[str], start: int, size: int, range_bytes: int) -> list[Range]:
        cuts = list(range(start, size, max(1, range_bytes))) or [start]
        return [Range(a, b) for a, b in zip(cuts, [*cuts[1:], None], strict=True)]

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self)

    def __hash__(self) -> int:
        return hash(type(self))

    def __repr__(self) -> str:
        return f"<source {self.name}>"


class DamagedStream(OSError):
    """A compressed input that cannot be read to its end: not of its format, corrupt or truncated."""

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        super().__init__(errno.EIO, what, os.fspath(path))


class Compressed(PlainFile):
    """A compressed file, read whole as one range: a subclass names its ``pattern`` and opens its ``stream``.

    Its offsets are in decompressed bytes. It is a stream: reaching an offset means
    decompressing everything before it, so it is never split, and its decompressed size is
    found once per version of the file (device, inode, size and modification time) and kept.
    A stream that ends early (a file still being written, or cut short) raises ``DamagedStream``
    once its complete lines are read: they are counted, and the rest is read once it is there.
    """

    seekable: ClassVar[bool] = False
    copies: ClassVar[bool] = True
    #: The file names it reads (a glob on the base name), e.g. ``*.gz``.
    pattern: ClassVar[str] = ""

    def stream(self, path: str | os.PathLike[str]) -> ForwardStream:
        """The file's decompressed bytes from the start (``ForwardStream``, e.g. ``FileStream``)."""
        raise NotImplementedError

    def matches(self, name: str) -> bool:
        return fnmatch.fnmatch(os.path.basename(name), self.pattern)

    def size(self, path: str | os.PathLike[str], info: os.stat_result | None = None) -> int:
        return self._scan(path, info)[0]

    def fingerprint(self, path: str | os.PathLike[str], length: int, start: int = 0) -> str:
        size, tail = self._scan(path) if start + length > FINGERPRINT_BYTES else (None, "")
        if start + length == size and length == min(FINGERPRINT_BYTES, size):
            return tail  # the bytes before the end, kept from the scan that found the size
        with self.open(path, start) as stream:
            return digest(stream.read(length))

    def open(self, path: str | os.PathLike[str], offset: int) -> Handle:
        stream = self.stream(path)
        try:
            stream.skip(offset)
        except BaseException:
            stream.close()
            raise
        return stream

    def split(self, path: str | os.PathLike[str], start: int, size: int, range_bytes: int) -> list[Range]:
        return [Range(start, None)]

    def version(self, path: str | os.PathLike[str], info: os.stat_result | None = None) -> tuple[Hashable, ...]:
        """What tells one version of the file from another: device, inode, size and modification time."""
        return file_version(info or os.stat(path))

    def _scan(self, path: str | os.PathLike[str], info: os.stat_result | None = None) -> tuple[int, str]:
        """The decompressed size and the hash of the last ``FINGERPRINT_BYTES``, by one read of the file."""
        key = (self.name, *self.version(path, info))
        with _SCANS_LOCK:
            found = _SCANS.get(key)
        if isinstance(found, DamagedStream):  # the same version of a damaged file: damaged still
            raise DamagedStream(path, found.strerror)
        if found is not None:
            return found
        size, tail = 0, b""
        try:
            with self.stream(path) as stream:
                while block := stream.read(_INPUT_BYTES * 4):
                    size += len(block)
                    tail = (tail + block)[-FINGERPRINT_BYTES:]
            found = (size, digest(tail))
        except DamagedStream as exc:
            found = exc
        with _SCANS_LOCK:
            _SCANS[key] = found
            while len(_SCANS) > _SCANS_KEPT:
                _SCANS.popitem(last=False)
        if isinstance(found, DamagedStream):
            raise DamagedStream(path, found.strerror)
        return found


class GzipFile(Compressed):
    """A gzip file (``.gz``, a rotated log as logrotate compresses it)."""

    name: ClassVar[str] = "gzip"
    pattern: ClassVar[str] = "*.gz"

    def stream(self, path: str | os.PathLike[str]) -> ForwardStream:
        return GzipStream(path)


PLAIN = PlainFile()
GZIP = GzipFile()
#: The sources ``discover`` chooses from when no plugin registers any: the first that matches.
DEFAULT_SOURCES: tuple[Source, ...] = (GZIP, PLAIN)


def registered(pm: Any) -> tuple[Source, ...]:
    """The sources plugins register (``register_sources``), in registration order, then the built-ins."""
    found: list[Source] = []
    for register in reversed(pm.hook.register_sources.get_hookimpls()):  # pluggy calls the last registered first
        register.function(register=found.append)
    return (*found, *DEFAULT_SOURCES)


def choose(name: str, sources: Sequence[Source] = DEFAULT_SOURCES) -> Source:
    """The source that reads the input named ``name``: the first that matches, plain files otherwise."""
    return next((source for source in sources if source.matches(name)), PLAIN)


# -- regular files -----------------------------------------------------------------------------

class NotRegularFile(OSError):
    """A path that is not a regular file (a FIFO, a device, a socket): never opened for reading.

    Reading one may never end (``/dev/zero``) or never start (a FIFO waits for a writer in
    ``open``), so only regular files are read; ``strerror`` says what the path is.
    """

    def __init__(self, path: str | os.PathLike[str], mode: int) -> None:
        super().__init__(errno.EINVAL, f"is {file_kind(mode)}, not a regular file; only regular files are read",
                         os.fspath(path))


_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a folder"),
)


def file_kind(mode: int) -> str:
    """What a file of this ``st_mode`` is, in words."""
    return next((kind for test, kind in _KINDS if test(mode)), "not a regular file")


def check_regular(path: str | os.PathLike[str], info: os.stat_result) -> None:
    """Raise ``NotRegularFile`` unless ``info`` (``os.stat`` of ``path``) is that of a regular file."""
    if not stat.S_ISREG(info.st_mode):
        raise NotRegularFile(path, info.st_mode)


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """Open a regular file for reading, unbuffered; raise ``NotRegularFile`` for anything else.

    The open itself never waits: ``O_NONBLOCK`` makes a FIFO (were the path swapped for one after
    a check) open at once, and the check is made on the open file, so no swap can slip past it.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        check_regular(path, os.fstat(fd))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise



# -- gzip ---------------------------------------------------------------------------------------

def file_version(info: os.stat_result) -> tuple[Hashable, ...]:
    """A local file's version (``Compressed.version``): device, inode, size and modification time."""
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


#: Compressed bytes read at a time.
_INPUT_BYTES = 1024 * 1024
#: Decompressed size and tail hash per version of a compressed file, (source, *``Compressed.version``),
#: or why it cannot be read to its end.
_SCANS: OrderedDict[tuple[Hashable, ...], tuple[int, str] | DamagedStream] = OrderedDict()
_SCANS_KEPT = 4096
_SCANS_LOCK = threading.Lock()


class ForwardStream:
    """Bytes read forward from the start; ``seek`` goes back only within the last block read.

    That is all the reader asks of an input: it hands each block over whole and reads the partial
    line at its end again as the start of the next one. A subclass provides ``_next``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._pos = 0  # the offset of the next byte ``read`` returns
        self._window = b""  # the last block returned, which started at ``_window_start``
        self._window_start = 0
        #: The bytes just before the offset it was opened at (``Compressed.open``), up to ``FINGERPRINT_BYTES``.
        self.behind = b""
        self._failed: DamagedStream | None = None

    def _next(self, size: int) -> bytes:
        """Up to ``size`` more bytes, b"" at the end; ``DamagedStream`` where they cannot be read."""
        raise NotImplementedError

    def close(self) -> None:
        """Close what it reads from."""

    def __enter__(self) -> ForwardStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def tell(self) -> int:
        return self._pos

    def skip(self, count: int) -> None:
        """Read past the first ``count`` bytes, keeping the last ``FINGERPRINT_BYTES`` of them as ``behind``;
        ``DamagedStream`` if the stream ends before."""
        behind = b""
        while self._pos < count:
            block = self.read(min(count - self._pos, _INPUT_BYTES * 4))
            if not block:
                raise DamagedStream(self.path, f"ends at byte {self._pos} of its decompressed content, "
                                               f"before byte {count}, which was counted")
            behind = (behind + block)[-FINGERPRINT_BYTES:]
        self.behind = behind

    def readinto(self, buffer: bytearray) -> int:
        block = self.read(len(buffer))
        buffer[:len(block)] = block
        return len(block)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence != 0 or not self._window_start <= offset <= self._window_start + len(self._window):
            raise OSError(errno.ESPIPE, "a stream seeks back only within the last block read", self.path)
        self._pos = offset
        return offset

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (fewer only at the end); ``DamagedStream`` where the stream is corrupt or cut short."""
        size = size if size >= 0 else 1 << 62
        start, at = self._pos, self._pos - self._window_start
        if at < len(self._window):  # after a seek back: the window's bytes again first
            block = self._window[at:at + size]
            if len(block) < size:
                block += self._filled(size - len(block))
                self._window, self._window_start = block, start
        else:
            block = self._filled(size)
            self._window, self._window_start = block, start
        self._pos = start + len(block)
        return block

    def _filled(self, size: int) -> bytes:
        """``size`` more bytes, fewer at the end; an error is raised once the bytes before it are returned."""
        if self._failed is not None:
            raise self._failed
        block = b""
        try:
            while len(block) < size and (more := self._next(size - len(block))):
                block = block + more if block else more
        except DamagedStream as exc:
            self._failed = exc
            if not block:
                raise
        return block


class FileStream(ForwardStream):
    """A decompressing file object's bytes (``bz2.BZ2File``, ``lzma.LZMAFile``) as a ``ForwardStream``.

    Whatever it raises while reading (a truncated or corrupt stream) becomes ``DamagedStream``.
    """

    def __init__(self, path: str | os.PathLike[str], file: BinaryIO, kind: str) -> None:
        super().__init__(path)
        self._file = file
        self._kind = kind

    def _next(self, size: int) -> bytes:
        try:
            return self._file.read(min(size, _INPUT_BYTES * 4))
        except (OSError, EOFError, ValueError) as exc:
            raise DamagedStream(self.path, f"is not a complete {self._kind} stream ({exc})") from None

    def close(self) -> None:
        self._file.close()


#: A gzip stream can be resumed at points this many decompressed bytes apart (see ``_Resume``) ...
RESUME_EVERY = 8 * 1024 * 1024
#: ... and at most this many per file (about 40 KB each): beyond, every other one is dropped.
_RESUME_POINTS = 256
#: Gzip files whose resume points are kept (the most recent).
_RESUME_FILES = 8


@dataclass(frozen=True)
class _Resume:
    """Where a gzip stream can be taken up again without decompressing what comes before: the
    decompressed offset, the compressed offset of the input not yet consumed there, and a copy
    of the decompressor's state (its 32 KiB window included). Noted while a file is read, so that
    reading a sample line back, or on from a counted offset, starts from the nearest point."""

    offset: int
    raw_offset: int
    inflate: Any


_RESUMES: OrderedDict[Hashable, list[_Resume]] = OrderedDict()
_RESUME_SPACING: dict[Hashable, int] = {}


def _before_damage(inflate: Any, data: bytes, step: int = 512) -> bytes:
    """What ``inflate`` (a zlib decompressor) makes of ``data`` before it meets the damage in it."""
    out = []
    for at in range(0, len(data), step):
        try:
            out.append(inflate.decompress(data[at:at + step]))
        except zlib.error:
            break
        if inflate.eof:
            break
    return b"".join(out)


class GzipStream(ForwardStream):
    """A gzip file's decompressed bytes. Members of a multi-member file follow each other (zero
    padding between them is skipped), as ``gzip -d`` reads them. Seeking forward decompresses up
    to the offset, from the nearest resume point before it."""

    def __init__(self, path: str | os.PathLike[str], raw: BinaryIO | None = None, version: Hashable = None) -> None:
        """``raw``, the compressed bytes, is opened from ``path`` unless given, with the ``version`` of
        the file it reads (an object's); resume points are kept per version."""
        super().__init__(path)
        self._raw = raw if raw is not None else open_regular(path)
        self._key = version if version is not None else file_version(os.fstat(self._raw.fileno()))
        self._raw_read = 0  # compressed bytes read so far
        self._produced = 0  # decompressed bytes made so far (returned or pending)
        self._inflate = zlib.decompressobj(wbits=31)
        self._member_started = False  # the current member has begun (padding after a member is no member)
        self._input = b""  # compressed bytes read and not yet given to the decompressor
        self._ended = False  # the end of the file, after the end of its last member
        self._error: DamagedStream | None = None  # raised once the bytes before it are returned
        self._pending = bytearray()  # decompressed, not yet returned

    def close(self) -> None:
        self._raw.close()

    def _next(self, size: int) -> bytes:
        return self._decompressed(size)

    def skip(self, count: int) -> None:
        self._jump(count - FINGERPRINT_BYTES)  # then ``behind`` is read whole
        super().skip(count)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0 and offset > self._window_start + len(self._window):  # ahead: read up to it
            self.skip(offset)
            return offset
        return super().seek(offset, whence)

    def _jump(self, target: int) -> None:
        """Go to the last resume point at or before ``target``, if it is ahead of what was decompressed."""
        with _SCANS_LOCK:
            points = _RESUMES.get(self._key, [])
            point = next((p for p in reversed(points) if self._produced < p.offset <= target), None)
        if point is None:
            return
        self._raw.seek(point.raw_offset)
        self._raw_read, self._produced = point.raw_offset, point.offset
        self._inflate = point.inflate.copy()
        self._member_started, self._input, self._pending = True, b"", bytearray()
        self._pos, self._window, self._window_start = point.offset, b"", point.offset

    def _note_resume(self) -> None:
        with _SCANS_LOCK:
            points = _RESUMES.setdefault(self._key, [])
            _RESUMES.move_to_end(self._key)
            spacing = _RESUME_SPACING.setdefault(self._key, RESUME_EVERY)
            if self._produced >= (points[-1].offset if points else 0) + spacing:
                points.append(_Resume(self._produced, self._raw_read - len(self._input), self._inflate.copy()))
                if len(points) > _RESUME_POINTS:  # a very large file: points twice as far apart
                    points[:] = points[1::2]
                    _RESUME_SPACING[self._key] = spacing * 2
            while len(_RESUMES) > _RESUME_FILES:
                _RESUME_SPACING.pop(_RESUMES.popitem(last=False)[0], None)

    def _decompressed(self, size: int) -> bytes:
        while len(self._pending) < size and not self._ended and self._error is None:
            try:
                self._inflate_more(size - len(self._pending))
            except DamagedStream as exc:
                self._error = exc
        if not self._pending and self._error is not None:
            raise self._error
        block = bytes(self._pending[:size])
        del self._pending[:size]
        return block

    def _inflate_more(self, wanted: int) -> None:
        if not self._input:
            self._input = self._raw.read(_INPUT_BYTES)
            self._raw_read += len(self._input)
            if not self._input:
                if self._member_started:
                    raise DamagedStream(self.path, "is a truncated gzip stream (it ends before its end marker)")
                self._ended = True
                return
        before = self._inflate.copy()
        try:
            more = self._inflate.decompress(self._input, max(wanted, 64 * 1024))
        except zlib.error as exc:
            what = "is not a gzip file" if not self._input.startswith(b"\x1f\x8b") else "is a corrupt gzip stream"
            # zlib drops what a call decompressed when it meets the damage: the bytes before it are
            # decompressed again, a little input at a time, so that their lines are counted.
            salvaged = _before_damage(before, self._input)
            self._pending += salvaged
            self._produced += len(salvaged)
            raise DamagedStream(self.path, f"{what} ({exc})") from None
        self._pending += more
        self._produced += len(more)
        self._input = self._inflate.unconsumed_tail
        self._member_started = not self._inflate.eof
        if self._member_started and more:
            self._note_resume()
        if self._inflate.eof:  # the end of a member: another may follow
            self._input = self._inflate.unused_data.lstrip(b"\x00")
            self._inflate = zlib.decompressobj(wbits=31)
