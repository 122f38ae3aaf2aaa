"""The ledger's base file: all entries as of a while ago, so that each commit writes only what changed since.

A watcher that runs for months knows hundreds of thousands of files. The checkpoint, written at
every commit, holds the ledger's changes since its base and names the base by file name and
SHA-256; the base (``ledger.<hash>.omp`` beside the checkpoint, in ``core.safestate``'s format,
its entries as Arrow frames) is written anew only once the changes since it pass ``REBASE_AFTER``.
A new base is written before the checkpoint that names it, and the base it replaces is removed
after: whatever a kill interrupts, the checkpoint in place names a base that is there.
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any

import polars as pl

from core import safestate
from core.ledger import Identity, Ledger, LedgerEntry
from core.output import atomic_write

log = logging.getLogger(__name__)

#: Entries changed since the base (files counted, renamed or departed) that the checkpoint holds
#: before a new base is written: what a commit writes of the ledger stays within this.
REBASE_AFTER = 256
_NAME = re.compile(r"^ledger\.[0-9a-f]{16}\.omp$")
GLOB = "ledger.*.omp"
_COLUMNS = {"dev": pl.UInt64, "ino": pl.UInt64, "fingerprint": pl.String, "fingerprint_len": pl.Int64,
            "offset": pl.Int64, "line": pl.Int64, "open_tail": pl.Boolean, "before": pl.String}


class DamagedBase(safestate.StateError):
    """A base file that does not match the checkpoint naming it, or cannot be read back."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(f"its ledger base {path.name} {what}")
        self.path = path


def stored(ledger: Ledger, folder: Path) -> dict[str, Any]:
    """The ledger as the checkpoint keeps it: its base (written first, when due) and the changes since."""
    entries, departed = ledger.changes()
    if ledger.base is None or len(entries) + len(departed) > REBASE_AFTER:
        ledger.rebase(_write(ledger, folder))
        entries, departed = {}, {}
    name, digest = ledger.base
    return {"base": name, "sha256": digest, "entries": entries, "departed": departed}


def loaded(record: Any, folder: Path) -> Ledger:
    """The ledger a checkpoint's record describes; ``StateError`` if it or its base is not as it must be."""
    if not (isinstance(record, dict) and set(record) == {"base", "sha256", "entries", "departed"}
            and isinstance(record["base"], str) and _NAME.match(record["base"])
            and isinstance(record["sha256"], str) and _changes_of(record["entries"], str)
            and _changes_of(record["departed"], tuple)):
        raise safestate.StateError("its ledger is not of the expected kind")
    ledger = _read(folder / record["base"], record["sha256"])
    ledger.apply(record["entries"], record["departed"])
    ledger.base = (record["base"], record["sha256"])
    return ledger


def remove_others(folder: Path, keep: str | None) -> None:
    """Remove the base files that the checkpoint in place no longer names."""
    for path in folder.glob(GLOB):
        if path.name != keep and _NAME.match(path.name):
            path.unlink(missing_ok=True)


def _changes_of(changes: Any, key: type) -> bool:
    return isinstance(changes, dict) and all(
        isinstance(k, key) and (v is None or isinstance(v, LedgerEntry)) for k, v in changes.items()
    )


def _write(ledger: Ledger, folder: Path) -> tuple[str, str]:
    names = list(ledger.entries)
    frames = {"entries": _frame(list(ledger.entries.values())).with_columns(name=pl.Series(names, dtype=pl.String)),
              "departed": _frame(list(ledger.departed.values()))}
    data = safestate.dumps(frames, {})
    digest = hashlib.sha256(data).hexdigest()
    name = f"ledger.{digest[:16]}.omp"
    atomic_write(folder / name, data)
    log.debug("wrote ledger base %s: %d files, %d departed", name, len(names), len(ledger.departed))
    return name, digest


def _frame(entries: list[LedgerEntry]) -> pl.DataFrame:
    return pl.DataFrame({column: [getattr(e, column) for e in entries] for column in _COLUMNS}, schema=_COLUMNS)


def _read(path: Path, digest: str) -> Ledger:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise safestate.StateError(f"its ledger base {path.name} cannot be read: {exc.strerror or exc}") from None
    if hashlib.sha256(data).hexdigest() != digest:
        raise DamagedBase(path, "does not match it (checksum mismatch)")
    try:
        frames = safestate.loads(data, {})
    except safestate.StateError as exc:
        raise DamagedBase(path, f"cannot be read: {exc}") from None
    if not (isinstance(frames, dict) and set(frames) == {"entries", "departed"}
            and all(isinstance(f, pl.DataFrame) for f in frames.values())
            and dict(frames["departed"].schema) == _COLUMNS
            and dict(frames["entries"].schema) == {**_COLUMNS, "name": pl.String}):
        raise DamagedBase(path, "is not of the expected kind")
    entries = {row[-1]: LedgerEntry(*row[:-1]) for row in frames["entries"].iter_rows()}
    departed: dict[Identity, LedgerEntry] = {}
    for row in frames["departed"].iter_rows():
        departed[(row[0], row[1])] = LedgerEntry(*row)
    return Ledger(entries, departed)
