"""The state folder: rule states and the ledger committed together, in one atomic replace."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from core.errors import ForeignState
from core.ledger import Ledger
from core.output import atomic_write
from core.parse import SCAN_VERSION
from core.rules import Rule
from core.settings import Settings
from core.state import RunState
from core.tally import TALLY_VERSION

log = logging.getLogger(__name__)

#: Bumped when the pickled layout changes; an older checkpoint is rebuilt rather than misread.
FORMAT = 1
FILE_NAME = "checkpoint.pickle"


def rule_fingerprint(rule: Rule) -> str:
    """What a rule's state depends on: its type, key and parameters, and the layout of its state."""
    spec = {"type": rule.type_name, "key": rule.key, "params": rule.params, "state": rule.state_version}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_fingerprint(settings: Settings) -> str:
    """What every count depends on: how lines are cut and classified, and how many samples are kept.

    The scan's and the tally's versions are part of it because rule state keeps the hashes they
    make (duplicate detection), and the Polars version because rule state is pickled Polars frames.
    """
    # The per-file samples are cut to the limit as they are counted; a new limit needs a recount.
    return (
        f"max_line_bytes={settings.max_line_bytes}, malformed_samples={settings.malformed_samples}, "
        f"polars={pl.__version__}, scan={SCAN_VERSION}, tally={TALLY_VERSION}"
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
_WRITTEN = ((".state", FILE_NAME), ("", "summary.json"), ("", "anomalies.json"))


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
    """The committed checkpoint, adapted to the current rules; a fresh one if none fits.

    Rules removed from the configuration are dropped and the others kept. A rule that is new or
    whose parameters changed, or a change in how lines are parsed, cannot be reconciled with state
    built before: then everything is rebuilt from the files still present, and a warning says why.
    A state built from another data folder raises ``ForeignState``: counts of two folders never mix.
    """
    remove_temp_files(settings)
    path = state_dir(settings) / FILE_NAME
    if reset or not path.exists():
        return Checkpoint.fresh(settings, rules)
    try:
        with open(path, "rb") as handle:
            stored = pickle.load(handle)
    except Exception as exc:  # a torn or foreign file must not stop the service; say so and rebuild
        log.warning("cannot read checkpoint %s (%s); rebuilding from the data folder", path, exc)
        return Checkpoint.fresh(settings, rules)
    _check_data_folder(stored, settings)
    reason = _mismatch(stored, settings, rules)
    if reason:
        log.warning("configuration changed (%s); rebuilding all counts from the files still present", reason)
        return Checkpoint.fresh(settings, rules)
    checkpoint: Checkpoint = stored["checkpoint"]
    checkpoint.data_dir = data_folder(settings)  # binds a checkpoint from before data_dir was kept
    for name in set(checkpoint.state.rules) - {r.name for r in rules}:
        log.info("rule '%s' is no longer enabled; dropping its state", name)
        checkpoint.state.rules.pop(name)
        checkpoint.rules.pop(name, None)
    return checkpoint


def _check_data_folder(stored: Any, settings: Settings) -> None:
    """Refuse a state of another data folder, before any rebuild could silently drop its counts."""
    checkpoint = stored.get("checkpoint") if isinstance(stored, dict) else None
    bound_to = getattr(checkpoint, "data_dir", "")
    if isinstance(bound_to, str) and bound_to and bound_to != data_folder(settings):
        raise ForeignState(settings.output_dir, bound_to, data_folder(settings))


def _mismatch(stored: Any, settings: Settings, rules: list[Rule]) -> str:
    if not isinstance(stored, dict) or stored.get("format") != FORMAT:
        return "checkpoint written by another version"
    checkpoint: Checkpoint = stored["checkpoint"]
    if checkpoint.parsing != parse_fingerprint(settings):
        return f"parsing settings were {checkpoint.parsing}, now {parse_fingerprint(settings)}"
    for rule in rules:
        was = checkpoint.rules.get(rule.name)
        if was is None:
            return f"rule '{rule.name}' is newly enabled"
        if was != rule_fingerprint(rule):
            return f"rule '{rule.name}' has new parameters or keeps its state differently"
    return ""


def save(settings: Settings, checkpoint: Checkpoint) -> None:
    """Seal the rule states, then write the checkpoint in one atomic replace (state and ledger agree)."""
    checkpoint.state.seal()
    stored = {"format": FORMAT, "checkpoint": checkpoint}
    atomic_write(state_dir(settings) / FILE_NAME, lambda out: pickle.dump(stored, out, protocol=pickle.HIGHEST_PROTOCOL))
