"""Find the input files in the data folder: globs, hidden and partial files, subfolders, symlinks."""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from core import objectstore
from core.errors import DataDirError
from core.objectstore import ObjectPath
from core.sources import (  # noqa: F401  (the regular-file checks were here: their old names stay)
    DEFAULT_SOURCES,
    NotRegularFile,
    Source,
    check_regular,
    choose,
    file_kind,
    open_regular,
)


@dataclass(frozen=True)
class DataFile:
    """An input file: ``path`` to open, ``name`` (relative to the data folder) to report, and the
    ``source`` that reads it (``core.sources``: a plain file, a gzip file, ...), chosen by its name."""

    path: Path
    name: str
    source: Source = field(default=None)  # type: ignore[assignment]  (chosen from ``name`` when not given)

    def __post_init__(self) -> None:
        if self.source is None:
            object.__setattr__(self, "source", choose(self.name))


@dataclass(frozen=True)
class Skipped:
    """A path in the data folder that will not be read, and why."""

    name: str
    reason: str


def wanted(name: str, include: tuple[str, ...], exclude: tuple[str, ...]) -> bool:
    """Whether a file name matches an include glob and no exclude glob."""
    base = os.path.basename(name)
    if any(fnmatch.fnmatch(base, pattern) for pattern in exclude):
        return False
    return any(fnmatch.fnmatch(base, pattern) for pattern in include)


def discover(
    data_dir: Path | ObjectPath, include: tuple[str, ...], exclude: tuple[str, ...], recursive: bool = False,
    sources: Sequence[Source] = DEFAULT_SOURCES,
) -> tuple[list[DataFile], list[Skipped]]:
    """The files to read, sorted by name, each with its source, and the paths passed over that a user may ask about.

    Symlinks to files are followed; one file reached twice (a link and its target) is read once.
    Subfolders are read only with ``recursive``; symlinked folders never, so no link loops.
    """
    if isinstance(data_dir, ObjectPath):
        return _discover_objects(data_dir, include, exclude, recursive, sources)
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
            files.append(DataFile(path, name, choose(name, sources)))  # opening it fails again, and is reported then
            continue
        if (info.st_dev, info.st_ino) in seen:
            skipped.append(Skipped(name, f"same file as {seen[(info.st_dev, info.st_ino)]}"))
            continue
        if valid_name(name):  # one that is not is refused (``core.run.plan``): another name of it is read
            seen[(info.st_dev, info.st_ino)] = name
        files.append(DataFile(path, name, choose(name, sources)))
    return files, skipped


def _discover_objects(
    root: ObjectPath, include: tuple[str, ...], exclude: tuple[str, ...], recursive: bool, sources: Sequence[Source],
) -> tuple[list[DataFile], list[Skipped]]:
    """The objects under a URL, as ``discover`` gives files: names are keys relative to the prefix."""
    names, passed = objectstore.listing(root, recursive)
    readers = objectstore.sources_for(root, tuple(sources))
    files, skipped = [], [Skipped(name, reason) for name, reason in passed]
    for name in names:
        if not wanted(name, include, exclude):
            continue
        files.append(DataFile(root / name, name, choose(name, readers)))  # type: ignore[arg-type]
    return files, skipped


def check_data_dir(data_dir: Path | ObjectPath) -> None:
    """Raise ``DataDirError`` unless ``data_dir`` is a folder that can be listed (``--check`` asks too)."""
    if isinstance(data_dir, ObjectPath):
        objectstore.check(data_dir)
        return
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
        elif _links_to_folder(entry):
            skipped.append(Skipped(str(path), "is a symlink to a folder, which is never followed"))
        else:
            # A dangling link, a FIFO or a device is reported when it is planned, never opened.
            found.append(path)
    return found


def _links_to_folder(entry: os.DirEntry) -> bool:
    """Whether ``entry`` is a symlink to a folder; False where the link cannot be followed (a loop, a
    dangling link), so that it is planned like any file, and reported when opening it fails."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def valid_name(name: str) -> bool:
    """Whether a file name is text: no byte that is not UTF-8 (which Python keeps as a lone surrogate)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def shown(name: str) -> str:
    """A file name as text to show: bytes that are not UTF-8 written as ``\\xff``."""
    return name if valid_name(name) else os.fsencode(name).decode("utf-8", "backslashreplace")
