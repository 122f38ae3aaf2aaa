"""The state folder: rule states and the ledger committed together, in one atomic replace.

The checkpoint is written in ``core.safestate``'s format: plain values, Arrow IPC frames and
objects of known classes only, with a SHA-256 over all of it. Reading it never runs code. A
checkpoint that fails its checksum or cannot be read is set aside (renamed) and everything is
rebuilt from the files still in the data folder, with a warning; the counts of files no longer
there are lost. A rule whose state holds something the format cannot store is left out of the
checkpoint and rebuilt from the data folder at each start, and the log says so.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from core import ledgerbase, safestate
from core.alertstate import AlertState
from core.errors import ForeignState
from core.ledger import Ledger
from core.output import atomic_write
from core.parse import SCAN_VERSION
from core.rules import Rule
from core.settings import Settings
from core.state import Failure, RunState
from core.stats import FileStats, FileTotals
from core.tally import TALLY_VERSION

log = logging.getLogger(__name__)

#: Bumped when the stored layout changes; an older checkpoint is rebuilt rather than misread.
FORMAT = 3  # 1 was a pickle; 2 held the whole ledger and every file's counts (still read)
READ_FORMATS = (2, FORMAT)
FILE_NAME = "checkpoint.omp"
#: Where checkpoints were pickled before: never read, only set aside (a pickle can run code).
PICKLED = "checkpoint.pickle"

def rule_fingerprint(rule: Rule) -> str:
    """What a rule's state depends on: its type, key and parameters, and the layout of its state."""
    spec = {"type": rule.type_name, "key": rule.key, "params": rule.params, "state": rule.state_version}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_fingerprint(settings: Settings) -> str:
    """What every count depends on: how lines are cut and classified, and how many samples are kept.

    The scan's and the tally's versions are part of it because rule state keeps the hashes they
    make (duplicate detection), and the Polars version because thinning keeps keys by Polars' hash.
    """
    # The per-file samples are cut to the limit as they are counted; a new limit needs a recount.
    return (
        f"max_line_bytes={settings.max_line_bytes}, malformed_samples={settings.malformed_samples}, "
        f"polars={pl.__version__}, scan={SCAN_VERSION}, tally={TALLY_VERSION}, "
        f"stray_clock_seconds={settings.stray_clock_seconds}"
    )


@dataclass
class Checkpoint:
    """Everything counted so far: merged rule states, per-file counts and the ledger."""

    state: RunState
    ledger: Ledger = field(default_factory=Ledger)
    rules: dict[str, str] = field(default_factory=dict)  # rule name -> rule_fingerprint
    parsing: str = ""
    #: The data folder counted, resolved; "" in checkpoints written before it was kept.
    data_dir: str = ""
    #: What the alerts sent and still have to send (``core.alerts``); empty in checkpoints written before.
    alerts: AlertState = field(default_factory=AlertState)
    #: Rules whose state must be built from the files still present before more is merged
    #: (``core.rebuild``): new, or with new parameters. Never saved: such a rule has no fingerprint.
    rebuild: set[str] = field(default_factory=set)

    @classmethod
    def fresh(cls, settings: Settings, rules: list[Rule]) -> Checkpoint:
        return cls(RunState.empty(rules), Ledger(), {r.name: rule_fingerprint(r) for r in rules},
                   parse_fingerprint(settings), data_folder(settings))


def state_dir(settings: Settings) -> Path:
    return settings.output_dir / ".state"


def data_folder(settings: Settings) -> str:
    """The data folder as the state knows it: resolved, so that another spelling of it is the same."""
    return str(settings.data_dir.resolve())


#: The files ``atomic_write`` replaces, by folder: a kill during a write leaves ``.<name>.<random>.tmp``.
_WRITTEN = ((".state", FILE_NAME), (".state", PICKLED), (".state", ledgerbase.GLOB), ("", "summary.json"),
            ("", "anomalies.json"))


def remove_temp_files(settings: Settings) -> None:
    """Remove the temp files a killed run left behind (the caller holds the state lock: none is in use)."""
    removed = 0
    for folder, name in _WRITTEN:
        for temp in (settings.output_dir / folder).glob(f".{name}.*.tmp"):
            try:
                temp.unlink()
                removed += 1
            except OSError as exc:
                log.warning("cannot remove %s, left by an interrupted run: %s", temp, exc.strerror or exc)
    if removed:
        log.info("removed %d temporary file%s left by an interrupted run", removed, "s" if removed > 1 else "")


def load(settings: Settings, rules: list[Rule], reset: bool = False) -> Checkpoint:
    """The committed checkpoint, adapted to the current rules (``adapt``); a fresh one if none fits.

    A change in how lines are parsed cannot be reconciled with any count made before: then
    everything is rebuilt from the files still present, and a warning says why.
    A state built from another data folder raises ``ForeignState``: counts of two folders never mix.
    """
    remove_temp_files(settings)
    folder = state_dir(settings)
    path = folder / FILE_NAME
    if (folder / PICKLED).exists():
        kept = _set_aside(folder / PICKLED)
        log.warning("%s is in the old pickled format, which is never read (it could run code); moved to %s",
                    folder / PICKLED, kept.name)
    if reset or not path.exists():
        return Checkpoint.fresh(settings, rules)
    try:
        stored = safestate.loads(path.read_bytes(), safestate.classes(type(rule) for rule in rules))
        if not isinstance(stored, dict) or stored.get("format") not in READ_FORMATS:
            raise safestate.StateError("written by another version")
        checkpoint = _checkpoint(stored, folder)
    except (OSError, safestate.StateError) as exc:  # a torn, altered or foreign file must not stop the service
        if isinstance(exc, ledgerbase.DamagedBase):
            _set_aside(exc.path)
        kept = _set_aside(path)
        log.warning("cannot read checkpoint %s (%s); moved it to %s and rebuilding all counts from the data "
                    "folder: the counts of files no longer there are lost", path, exc, kept.name)
        return Checkpoint.fresh(settings, rules)
    if checkpoint.data_dir and checkpoint.data_dir != data_folder(settings):  # before any rebuild could drop its counts
        raise ForeignState(settings.output_dir, checkpoint.data_dir, data_folder(settings))
    if checkpoint.parsing != parse_fingerprint(settings):
        log.warning("configuration changed (parsing settings were %s, now %s); rebuilding all counts from the "
                    "files still present", checkpoint.parsing, parse_fingerprint(settings))
        fresh = Checkpoint.fresh(settings, rules)
        fresh.alerts = checkpoint.alerts  # the incidents rebuilt keep their ids: what was sent stays sent
        return fresh
    checkpoint.data_dir = data_folder(settings)
    adapt(checkpoint, rules)
    return checkpoint


def adapt(checkpoint: Checkpoint, rules: list[Rule]) -> None:
    """Fit the checkpoint to ``rules``: each rule keeps its state unless it is new or its parameters changed.

    A rule no longer enabled is dropped. A new or changed one loses its state, its fingerprint and
    its failures, and is marked for ``core.rebuild`` to build from the files still present; the
    others keep theirs. Both a start and a watcher's reload (``core.reload``) come through here.
    """
    enabled = {rule.name for rule in rules}
    for name in set(checkpoint.state.rules) - enabled:
        log.info("rule '%s' is no longer enabled; dropping its state", name)
        checkpoint.state.rules.pop(name)
    for name in set(checkpoint.rules) - enabled:
        checkpoint.rules.pop(name)
    for rule in rules:
        was = checkpoint.rules.get(rule.name)
        if was == rule_fingerprint(rule):
            continue
        why = "is newly enabled, or its state could not be saved" if was is None else \
            "has new parameters or keeps its state differently"
        log.warning("rule '%s' %s; rebuilding its state from the files still present", rule.name, why)
        checkpoint.state.rules.pop(rule.name, None)
        checkpoint.rules.pop(rule.name, None)
        checkpoint.state.failures = {f for f in checkpoint.state.failures if f.kind != "rule" or f.rule != rule.name}
        checkpoint.rebuild.add(rule.name)


def _checkpoint(stored: dict[str, Any], folder: Path) -> Checkpoint:
    """The checkpoint a stored mapping describes; ``StateError`` if its parts are not what they must be."""
    states, files, failures = stored.get("states"), stored.get("files"), stored.get("failures")
    ledger, fingerprints, parsing = stored.get("ledger"), stored.get("rules"), stored.get("parsing")
    if stored["format"] == FORMAT:  # the ledger's changes since its base file
        ledger = ledgerbase.loaded(ledger, folder)
    data_dir, earlier = stored.get("data_dir"), stored.get("earlier", FileTotals())
    alerts = stored.get("alerts", AlertState())
    if not (isinstance(states, dict) and all(isinstance(rule, Rule) for rule in states.values())
            and isinstance(files, dict) and all(isinstance(f, FileStats) for f in files.values())
            and isinstance(failures, set) and all(isinstance(f, Failure) for f in failures)
            and isinstance(ledger, Ledger) and isinstance(fingerprints, dict) and isinstance(parsing, str)
            and isinstance(data_dir, str) and isinstance(earlier, FileTotals) and isinstance(alerts, AlertState)):
        raise safestate.StateError("its parts are not of the expected kinds")
    return Checkpoint(RunState(states, files, failures, earlier), ledger, fingerprints, parsing, data_dir, alerts)


def _set_aside(path: Path) -> Path:
    """Rename ``path`` out of the way (never deleted: someone may want to look at it)."""
    kept = path.with_name(f"{path.name}.{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.unread")
    path.replace(kept)
    return kept


def save(settings: Settings, checkpoint: Checkpoint) -> None:
    """Seal the rule states, then write the checkpoint in one atomic replace (state and ledger agree).

    A rule whose state cannot be stored safely is left out, with a warning: it is rebuilt from
    the data folder at the next start (as a rule newly enabled is).
    """
    checkpoint.state.seal()
    folder = state_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    known = safestate.classes(type(rule) for rule in checkpoint.state.rules.values())
    writer = safestate.Writer(known)
    states, fingerprints = {}, {}
    for name, rule in checkpoint.state.rules.items():
        try:
            states[name] = safestate.Encoded(writer.encode(rule, f"rule '{name}'"))  # each rule walked once
        except safestate.UnsafeValue as exc:
            log.warning("rule '%s' (%s) keeps state the checkpoint cannot store safely (%s); it is rebuilt from "
                        "the data folder at each start", name, safestate.class_name(type(rule)), exc)
            continue
        if name in checkpoint.rules:
            fingerprints[name] = checkpoint.rules[name]
    stored = writer.encode({
        "format": FORMAT, "parsing": checkpoint.parsing, "rules": fingerprints, "states": states,
        "files": checkpoint.state.files, "earlier": checkpoint.state.earlier,
        "failures": checkpoint.state.failures, "ledger": ledgerbase.stored(checkpoint.ledger, folder),
        "data_dir": checkpoint.data_dir, "alerts": checkpoint.alerts,
    })
    atomic_write(folder / FILE_NAME, lambda out: writer.write(stored, out))
    ledgerbase.remove_others(folder, checkpoint.ledger.base[0] if checkpoint.ledger.base else None)
