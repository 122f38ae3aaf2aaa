"""Find the input files in the data folder: globs, hidden and partial files, subfolders, symlinks."""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from core.errors import DataDirError


@dataclass(frozen=True)
class DataFile:
    """An input file: ``path`` to open, ``name`` (relative to the data folder) to report."""

    path: Path
    name: str


@dataclass(frozen=True)
class Skipped:
    """A path in the data folder that will not be read, and why."""

    name: str
    reason: str


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


def wanted(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Whether a file name matches an include glob and no exclude glob."""
    base = os.path.basename(name)
    if any(fnmatch.fnmatch(base, pattern) for pattern in exclude):
        return False
    return any(fnmatch.fnmatch(base, pattern) for pattern in include)


def discover(
    data_dir: Path, include: tuple[str, ...], exclude: tuple[str, ...], recursive: bool = False
) -> tuple[list[DataFile], list[Skipped]]:
    """The files to read, sorted by name, and the paths passed over that a user may ask about.

    Symlinks to files are followed; one file reached twice (a link and its target) is read once.
    Subfolders are read only with ``recursive``; symlinked folders never, so no link loops.
    """
    check_data_dir(data_dir)
    files: list[DataFile] = []
    skipped: list[Skipped] = []
    seen: dict[tuple[int, int], str] = {}
    for path in _walk(data_dir, recursive, skipped):
        name = path.relative_to(data_dir).as_posix()
        if not wanted(name, include, exclude):
            continue
        try:
            info = path.stat()
        except OSError:
            files.append(DataFile(path, name))  # opening it fails again, and is reported then
            continue
        if (info.st_dev, info.st_ino) in seen:
            skipped.append(Skipped(name, f"same file as {seen[(info.st_dev, info.st_ino)]}"))
            continue
        seen[(info.st_dev, info.st_ino)] = name
        files.append(DataFile(path, name))
    return files, skipped


def check_data_dir(data_dir: Path) -> None:
    """Raise ``DataDirError`` unless ``data_dir`` is a folder that can be listed (``--check`` asks too)."""
    if not data_dir.exists():
        raise DataDirError(f"data folder '{data_dir}' does not exist")
    if not data_dir.is_dir():
        raise DataDirError(f"data folder '{data_dir}' is not a folder")
    try:
        with os.scandir(data_dir):
            pass
    except OSError as exc:
        raise DataDirError(f"data folder '{data_dir}' cannot be listed: {exc.strerror or exc}") from None


def _walk(folder: Path, recursive: bool, skipped: list[Skipped]) -> list[Path]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        raise DataDirError(f"data folder '{folder}' cannot be listed: {exc.strerror or exc}") from None
    found: list[Path] = []
    for entry in entries:
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if recursive and not entry.name.startswith("."):
                found.extend(_walk(path, recursive, skipped))
            elif not entry.name.startswith("."):
                skipped.append(Skipped(str(path), "is a subfolder (set 'recursive: true' to read subfolders)"))
        elif entry.is_dir():
            skipped.append(Skipped(str(path), "is a symlink to a folder, which is never followed"))
        else:
            # A dangling link, a FIFO or a device is reported when it is planned, never opened.
            found.append(path)
    return found
