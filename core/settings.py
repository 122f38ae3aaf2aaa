"""Load ``settings.yaml``: defaults, overrides, validation and path resolution."""

from __future__ import annotations

import copy
import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from core import budget, redact
from core.alertconfig import BLOCK_SCHEMA as ALERTS_SCHEMA
from core.errors import ConfigError
from core.objectstore import ObjectPath, is_url
from core.validation import SchemaCheck, load_yaml

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "data_dir": "data",
    "storage_options": {},
    "output_dir": "output",
    "include": ["*.txt", "*.log", "*.txt.gz", "*.log.gz"],
    "exclude": [".*", "*~", "*.tmp", "*.temp", "*.part", "*.partial", "*.swp", "*.crdownload"],
    "recursive": False,
    "workers": 0,
    "chunk_bytes": 5242880,  # 5 MiB (docs/scaling.md, "2026-12-06, morning")
    "queue_size": 1,
    "executor": {"type": "threads", "scheduler": None, "workers": 0},
    "watch": {"settle_ms": 500, "poll_interval_ms": 500, "rescan_seconds": 30, "status_seconds": 30},
    "limits": {"max_line_bytes": 65536, "malformed_samples": 100, "memory_mb": 500, "summary_files": 100,
               "stray_clock_seconds": 86400},
    "redact": {"cards": True, "emails": True, "patterns": []},
    "rule_files": ["rules/*.yaml"],
    "plugins": [],
    "rules": [],
    "alerts": {},
}

_GLOBS = {"type": "array", "items": {"type": "string", "minLength": 1}}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "data_dir": {"type": "string", "minLength": 1},
        # Passed to fsspec when data_dir is a URL (s3://...): endpoint_url, client_kwargs, anon, ...
        "storage_options": {"type": "object"},
        "output_dir": {"type": "string", "minLength": 1},
        "include": _GLOBS,
        "exclude": _GLOBS,
        "recursive": {"type": "boolean"},
        "workers": {"type": "integer", "minimum": 0, "maximum": 256},
        "chunk_bytes": {"type": "integer", "minimum": 1024, "maximum": 1024**3},
        "queue_size": {"type": "integer", "minimum": 1, "maximum": 1024},
        "executor": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "type": {"enum": ["threads", "dask"]},
                # A Dask scheduler's address: tcp://HOST:PORT (tls:// with certificates set up for Dask).
                "scheduler": {"type": ["string", "null"], "pattern": r"^(tcp|tls|ucx|inproc)://\S+$"},
                "workers": {"type": "integer", "minimum": 0, "maximum": 256},
            },
        },
        "watch": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "settle_ms": {"type": "integer", "minimum": 0, "maximum": 3_600_000},
                "poll_interval_ms": {"type": "integer", "minimum": 10, "maximum": 3_600_000},
                "rescan_seconds": {"type": "number", "minimum": 0.1},
                "status_seconds": {"type": "number", "minimum": 0.1},
            },
        },
        "limits": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "max_line_bytes": {"type": "integer", "minimum": 64, "maximum": 256 * 1024**2},
                "malformed_samples": {"type": "integer", "minimum": 0, "maximum": 100000},
                # 1 PiB: beyond any machine, and far inside what the budget's arithmetic takes.
                "memory_mb": {"type": "integer", "minimum": 64, "maximum": 1024**3},
                "summary_files": {"type": "integer", "minimum": 0, "maximum": 100000},
                # null: no record's clock is taken for a stray (core.parse.stray_rows).
                "stray_clock_seconds": {"type": ["number", "null"], "minimum": 1, "maximum": 1e9},
            },
        },
        "redact": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "cards": {"type": "boolean"},
                "emails": {"type": "boolean"},
                "patterns": {"type": "array", "items": {"type": "string", "minLength": 1}},
            },
        },
        "rule_files": _GLOBS,
        "plugins": {"type": "array", "items": {"type": "string", "pattern": r"^[A-Za-z_][\w.]*$"}},
        "rules": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
        "alerts": ALERTS_SCHEMA,
    },
}
_CHECK = SchemaCheck(SCHEMA, shipped=True, written=True)


@dataclass(frozen=True)
class Settings:
    """Validated settings; paths are absolute, resolved against the settings file's folder."""

    source: Path
    #: A local folder, or a folder in object storage (``s3://bucket/prefix``, with its storage options).
    data_dir: Path | ObjectPath
    output_dir: Path
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    recursive: bool
    workers: int
    chunk_bytes: int
    queue_size: int
    #: Where chunk work runs (``core.executor.EXECUTORS``): ``threads`` of this process, or ``dask``.
    executor: str
    #: The Dask scheduler to connect to; None with ``dask`` starts a local cluster of processes.
    scheduler: str | None
    #: Worker processes of a local Dask cluster (``executor.workers``, or ``workers`` when 0).
    executor_workers: int
    settle_ms: int
    poll_interval_ms: int
    rescan_seconds: float
    status_seconds: float
    max_line_bytes: int
    malformed_samples: int
    memory_mb: int
    #: How many files summary.json lists one by one (the most recently counted); the rest are in its totals.
    summary_files: int
    #: A record this far from the times of the lines around it has a stray clock (``core.parse.stray_rows``):
    #: counted, but left out of the rules that place records in event time. None: never.
    stray_clock_seconds: float | None
    redact_cards: bool
    redact_emails: bool
    redact_patterns: tuple[str, ...]
    rule_files: tuple[str, ...]
    plugins: tuple[str, ...]
    rules: tuple[str, ...]
    #: The ``alerts:`` block as validated (its destinations are built by ``core.alertconfig.load_alerts``).
    alerts: dict[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def stray_us(self) -> int | None:
        """``stray_clock_seconds`` in microseconds, as records' times are."""
        return None if self.stray_clock_seconds is None else round(self.stray_clock_seconds * 1_000_000)

    def as_dict(self) -> dict[str, Any]:
        """Plain values, for hooks and for the run's record in summary.json."""
        return {k: (str(v) if isinstance(v, os.PathLike) else v) for k, v in self.__dict__.items()}


def load_settings(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Settings:
    """Read, validate and resolve a settings file; ``overrides`` (from the CLI) win over it."""
    source = Path(path)
    raw = _read_yaml(source)
    merged = _merge(DEFAULTS, raw)
    problems = _executor_problems(source, merged)  # the file's own: ``--executor threads`` may override it
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):  # a block: the values given win
            merged[key] = {**merged[key], **{k: v for k, v in value.items() if v is not None}}
        elif value is not None:
            merged[key] = value
    problems += [f"{source}: {p}" for p in _CHECK.problems(merged)]
    problems += _chunk_problems(source, merged)
    problems += [f"{source}: {p}" for p in redact.pattern_problems(_redact_block(merged).get("patterns"))]
    if problems:
        raise ConfigError(problems)
    return _fit_memory(_resolve(source, merged))


def _fit_memory(settings: Settings) -> Settings:
    """Shrink queue_size and chunk_bytes, with a warning, until the input in flight fits limits.memory_mb."""
    try:
        fit = budget.fit_input(settings.memory_mb, settings.workers, settings.chunk_bytes,
                               settings.queue_size, settings.max_line_bytes)
    except budget.MemoryTooSmall as exc:
        raise ConfigError([
            f"{settings.source}: limits.memory_mb: {exc}; hint: raise limits.memory_mb, or lower workers "
            "or limits.max_line_bytes"
        ]) from None
    if fit.changes:
        log.warning("limits.memory_mb %d: %s, so that the chunks in flight fit the memory cap",
                    settings.memory_mb, ", ".join(fit.changes))
    return dataclasses.replace(settings, chunk_bytes=fit.chunk_bytes, queue_size=fit.queue_size)


def _read_yaml(source: Path) -> dict[str, Any]:
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{source}: settings file not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{source}: cannot read settings file: {exc}"]) from None
    try:
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {_yaml_problem(exc)}"]) from None
    if raw is None:
        raise ConfigError([f"{source}: settings file is empty; expected a mapping such as 'rules: [...]'"])
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: expected a mapping of settings, got {type(raw).__name__}"])
    return raw


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + str(getattr(exc, "problem", None) or exc)


def _merge(defaults: dict[str, Any], raw: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(defaults)
    for key, value in raw.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def _executor_problems(source: Path, merged: dict[str, Any]) -> list[str]:
    block = merged.get("executor")
    if not isinstance(block, dict) or block.get("type") != "threads":
        return []
    if block.get("scheduler"):
        return [f"{source}: executor.scheduler: only used with executor.type 'dask', got type 'threads'; "
                "hint: set executor.type: dask (or run with --scheduler, which implies it)"]
    return []


def _chunk_problems(source: Path, merged: dict[str, Any]) -> list[str]:
    limits = merged.get("limits")
    chunk = merged.get("chunk_bytes")
    if not isinstance(limits, dict) or not isinstance(chunk, int):
        return []
    longest = limits.get("max_line_bytes")
    if isinstance(longest, int) and chunk <= longest:
        return [
            f"{source}: chunk_bytes: expected more than limits.max_line_bytes ({longest}), got {chunk}; "
            "hint: a chunk must hold at least one line of the longest allowed length"
        ]
    return []


def _redact_block(merged: dict[str, Any]) -> dict[str, Any]:
    block = merged.get("redact")
    return block if isinstance(block, dict) else {}


def _resolve(source: Path, merged: dict[str, Any]) -> Settings:
    base = source.resolve().parent
    limits = merged["limits"]
    return Settings(
        source=source.resolve(),
        data_dir=(ObjectPath.of(merged["data_dir"], merged["storage_options"]) if is_url(merged["data_dir"])
                  else _absolute(base, merged["data_dir"])),
        output_dir=_absolute(base, merged["output_dir"]),
        include=tuple(merged["include"]),
        exclude=tuple(merged["exclude"]),
        recursive=merged["recursive"],
        workers=merged["workers"] or (os.cpu_count() or 1),
        chunk_bytes=merged["chunk_bytes"],
        queue_size=merged["queue_size"],
        executor=merged["executor"]["type"],
        scheduler=merged["executor"]["scheduler"] if merged["executor"]["type"] == "dask" else None,
        executor_workers=merged["executor"]["workers"] or merged["workers"] or (os.cpu_count() or 1),
        settle_ms=merged["watch"]["settle_ms"],
        poll_interval_ms=merged["watch"]["poll_interval_ms"],
        rescan_seconds=merged["watch"]["rescan_seconds"],
        status_seconds=merged["watch"]["status_seconds"],
        max_line_bytes=limits["max_line_bytes"],
        malformed_samples=limits["malformed_samples"],
        memory_mb=limits["memory_mb"],
        summary_files=limits["summary_files"],
        stray_clock_seconds=limits["stray_clock_seconds"],
        redact_cards=merged["redact"]["cards"],
        redact_emails=merged["redact"]["emails"],
        redact_patterns=tuple(merged["redact"]["patterns"]),
        rule_files=tuple(merged["rule_files"]),
        plugins=tuple(merged["plugins"]),
        rules=tuple(merged["rules"]),
        alerts=merged["alerts"],
    )


def _absolute(base: Path, value: str | os.PathLike[str]) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path
