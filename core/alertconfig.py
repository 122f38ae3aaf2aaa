"""The ``alerts:`` block of settings.yaml: destinations (each checked against its type's schema), silences, timers.

A destination type is a class (``Alerter``) that a plugin registers through the
``register_alerters`` hook, as a rule type is registered through ``register_rule_types``. The
core reads the common fields of every destination (``name``, ``type``, ``min_severity``,
``rules``, ``send_resolved``, ``repeat_interval``, ``max_per_message``) and hands the rest to the
type, after checking them against its JSON Schema with the same messages as rule parameters.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, ClassVar

import pluggy

from core.errors import ConfigError
from core.validation import SchemaCheck, found

if TYPE_CHECKING:
    from pathlib import Path

    from core.alerts import Message
    from core.settings import Settings

SEVERITIES = ("low", "medium", "high", "critical")
#: The rule name of the incident the watcher raises when no record arrived for ``no_data_after``.
NO_DATA_RULE = "no-data"
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: A duration as rule files write it: a whole number and its unit (``90s``, ``10m``, ``1h``, ``1d``).
DURATION = {"type": "string", "pattern": r"^[1-9][0-9]*[smhd]$", "format": "duration",  # at most ten years
            "title": "a duration: a whole number and its unit, s, m, h or d (90s, 10m, 1h, 1d)"}
INSTANT = {
    "type": "string",
    "pattern": (r"^[0-9]{4}-[0-9]{2}-[0-9]{2}"
                r"(T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?(Z|[+-][0-9]{2}:[0-9]{2})?)?$"),
    "format": "instant",  # a day that exists
    "title": "a UTC date or time in ISO 8601 (2026-12-31 or 2026-12-31T18:00:00Z)",
}
_NAME = {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
         "title": "a name of letters, digits, '-', '_' or '.'"}

#: The ``alerts:`` block as settings.yaml holds it; each destination's own fields are checked by its type.
BLOCK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "batch": {"type": "boolean"},
        "no_data_after": {"oneOf": [DURATION, {"type": "null"}]},
        "retry": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"first": DURATION, "max": DURATION, "attempts": {"type": "integer", "minimum": 1,
                                                                             "maximum": 1000}},
        },
        "destinations": {"type": "array", "items": {"type": "object"}},
        "silences": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["rule", "until"],
                "properties": {"rule": _NAME, "key": {"type": "string"}, "until": INSTANT,
                               "comment": {"type": "string"}},
            },
        },
    },
}
#: The fields every destination takes, whatever its type.
COMMON_FIELDS: dict[str, Any] = {
    "name": _NAME,
    "type": {"type": "string", "minLength": 1},
    "min_severity": {"enum": list(SEVERITIES)},
    "rules": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
    "send_resolved": {"type": "boolean"},
    "repeat_interval": {"oneOf": [DURATION, {"type": "null"}]},
    "max_per_message": {"type": "integer", "minimum": 1, "maximum": 10000},
}
RETRY_DEFAULTS = {"first": "10s", "max": "10m", "attempts": 5}
MAX_PER_MESSAGE = 20


def seconds(duration: str) -> float:
    """``"90s"`` -> 90.0, ``"10m"`` -> 600.0, ``"1h"``, ``"1d"``."""
    return float(int(duration[:-1]) * _UNITS[duration[-1]])


def instant(text: str) -> float:
    """An ISO 8601 date or time (no zone: UTC) as seconds since the epoch."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


class Alerter:
    """Base class of every alert destination type.

    A subclass sets ``type_name`` (what settings write in ``type:``) and ``params_schema`` (a JSON
    Schema whose ``properties`` and ``required`` are its own fields), takes them in ``setup``, and
    delivers a message in ``send``. ``send`` raises on failure (any exception: an HTTP error, a
    refused connection, a program's non-zero exit); the engine retries with back-off and keeps
    the message queued meanwhile. ``setup`` raises ``ValueError`` for a field it cannot use (an
    environment variable that is not set): a configuration error naming the destination.
    """

    type_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params_schema: ClassVar[dict[str, Any]] = {"type": "object", "properties": {}}
    #: The plugin that registered this type; set by the engine when the plugin registers it.
    plugin: ClassVar[str] = ""
    #: The most seconds one ``send`` may take (a shutdown waits this long for a send in flight).
    timeout: float = 30.0

    def __init__(self, name: str, *, base_dir: Path | None = None, **params: Any) -> None:
        self.name = name
        #: The settings file's folder: where relative paths in a destination's fields start.
        self.base_dir = base_dir
        self.params = params
        self.setup(**params)

    def setup(self, **params: Any) -> None:
        """Take the validated fields; override with named arguments."""

    def send(self, message: Message) -> None:
        """Deliver ``message`` (see ``core.alerts.Message``); raise if it was not delivered."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"


@dataclass(frozen=True)
class Destination:
    """One configured destination: its alerter and what it is sent."""

    name: str
    alerter: Alerter
    min_severity: str = "low"
    rules: frozenset[str] | None = None
    send_resolved: bool = False
    repeat_interval: float | None = None
    max_per_message: int = MAX_PER_MESSAGE

    def wants(self, incident: dict[str, Any]) -> bool:
        """Whether an incident passes this destination's ``min_severity`` and ``rules`` filters."""
        severity = incident.get("severity")
        level = SEVERITIES.index(severity) if severity in SEVERITIES else 0
        return level >= SEVERITIES.index(self.min_severity) and (self.rules is None or incident.get("rule")
                                                                  in self.rules)


@dataclass(frozen=True)
class Silence:
    """Incidents of ``rule`` (and ``key``, if given) are not sent before ``until`` (seconds since the epoch)."""

    rule: str
    key: str | None
    until: float
    until_text: str
    comment: str = ""

    def matches(self, incident: dict[str, Any], now: float) -> bool:
        return (now < self.until and incident.get("rule") == self.rule
                and (self.key is None or incident.get("key") == self.key))


@dataclass(frozen=True)
class AlertConfig:
    """The validated ``alerts:`` block."""

    destinations: tuple[Destination, ...] = ()
    silences: tuple[Silence, ...] = ()
    no_data_after: float | None = None
    batch: bool = False
    retry_first: float = 10.0
    retry_max: float = 600.0
    retry_attempts: int = 5

    def silence_for(self, incident: dict[str, Any], now: float) -> Silence | None:
        return next((s for s in self.silences if s.matches(incident, now)), None)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed try: doubling from ``retry.first`` up to ``retry.max``."""
        return min(self.retry_first * 2 ** max(attempts - 1, 0), self.retry_max)


def alerter_types(pm: pluggy.PluginManager) -> dict[str, type[Alerter]]:
    """Every destination type the registered plugins provide, by ``type_name``; a bad one is a ConfigError."""
    from core.guard import each_plugin  # here: settings.py imports this module, and needs none of that

    found_types: dict[str, type[Alerter]] = {}
    problems: list[str] = []
    for plugin, call in each_plugin(pm, "register_alerters"):

        def register(cls: type[Alerter], plugin: str = plugin) -> None:
            if not (isinstance(cls, type) and issubclass(cls, Alerter)) or not cls.type_name:
                problems.append(f"plugin '{plugin}': alert destination type {cls!r}: expected a subclass of "
                                "core.alerts.Alerter with a type_name")
            elif cls.type_name in found_types and found_types[cls.type_name] is not cls:
                problems.append(f"alert destination type '{cls.type_name}' is registered twice: by "
                                f"{found_types[cls.type_name].__module__} and {cls.__module__}")
            else:
                found_types[cls.type_name] = cls
                cls.plugin = plugin

        try:
            call(register=register)
        except Exception as exc:  # a plugin's bug at start-up: a configuration error that names it
            problems.append(f"plugin '{plugin}': register_alerters raised {type(exc).__name__}: {exc}")
    if problems:
        raise ConfigError(problems)
    return found_types


def load_alerts(settings: Settings, pm: pluggy.PluginManager, rule_names: list[str] | None = None) -> AlertConfig:
    """The ``alerts:`` block, each destination built; every problem at once as a ``ConfigError``.

    ``rule_names`` (the enabled rules, when they could be loaded) is what ``rules:`` filters and
    silences may name, with ``no-data``.
    """
    block = settings.alerts
    source = settings.source.name
    known = None if rule_names is None else [*rule_names, NO_DATA_RULE]
    types = alerter_types(pm)
    checks: dict[str, SchemaCheck] = {}
    destinations, problems = [], []
    for index, raw in enumerate(block.get("destinations") or []):
        where = f"{source}: alerts: destination " + (f"'{raw['name']}'" if isinstance(raw.get("name"), str)
                                                      else f"#{index + 1}")
        built, found_problems = _destination(where, index, raw, types, checks, known, settings)
        problems += found_problems
        if built is not None:
            destinations.append(built)
    problems += _duplicates(source, [d.name for d in destinations])
    silences = []
    for index, raw in enumerate(block.get("silences") or []):
        problems += _unknown_rule(f"{source}: alerts: silences[{index}]: rule", raw["rule"], known)
        silences.append(Silence(raw["rule"], raw.get("key"), instant(raw["until"]), raw["until"],
                                raw.get("comment", "")))
    if problems:
        raise ConfigError(problems)
    retry = {**RETRY_DEFAULTS, **(block.get("retry") or {})}
    no_data = block.get("no_data_after")
    return AlertConfig(tuple(destinations), tuple(silences), seconds(no_data) if no_data else None,
                       bool(block.get("batch", False)), seconds(retry["first"]), seconds(retry["max"]),
                       retry["attempts"])


def _destination(
    where: str, index: int, raw: dict[str, Any], types: dict[str, type[Alerter]], checks: dict[str, SchemaCheck],
    known: list[str] | None, settings: Settings,
) -> tuple[Destination | None, list[str]]:
    kind = raw.get("type")
    if not isinstance(kind, str) or kind not in types:
        close = difflib.get_close_matches(str(kind), list(types), n=1) if isinstance(kind, str) else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        what = f"unknown alert destination type '{kind}'" if isinstance(kind, str) else \
            f"expected an alert destination type, got {found(kind)}"
        return None, [f"{where}: type: {what}{hint}; known types: {', '.join(sorted(types))}"]
    from core.plugins import shipped

    cls = types[kind]
    if kind not in checks:
        checks[kind] = SchemaCheck(_schema(cls), shipped=shipped(cls))
    problems = [f"{where}: {p}" for p in checks[kind].problems(raw)]
    named = raw.get("rules")
    for name in named if isinstance(named, list) else []:
        if isinstance(name, str):
            problems += _unknown_rule(f"{where}: rules", name, known)
    if problems:
        return None, problems
    name = raw.get("name", kind)
    params = {k: v for k, v in raw.items() if k not in COMMON_FIELDS}
    try:
        alerter = cls(name, base_dir=settings.source.parent, **params)
    except (TypeError, ValueError) as exc:  # by convention, setup's word on its fields
        return None, [f"{where}: {exc}"]
    except Exception as exc:  # a plugin's bug: refused at start-up, naming it
        return None, [f"{where} (plugin '{cls.plugin}'): setup raised {type(exc).__name__}: {exc}"]
    repeat = raw.get("repeat_interval")
    rules = raw.get("rules")
    return Destination(name, alerter, raw.get("min_severity", "low"), None if rules is None else frozenset(rules),
                       raw.get("send_resolved", False), seconds(repeat) if repeat else None,
                       raw.get("max_per_message", MAX_PER_MESSAGE)), []


def _schema(cls: type[Alerter]) -> dict[str, Any]:
    """A destination type's schema: the common fields and its own, nothing else."""
    own = cls.params_schema
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["type", *own.get("required", [])],
        "properties": {**COMMON_FIELDS, **own.get("properties", {})},
    }


def _unknown_rule(where: str, name: str, known: list[str] | None) -> list[str]:
    if known is None or name in known:
        return []
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    return [f"{where}: unknown rule '{name}'{hint}; enabled rules: {', '.join(known)}"]


def _duplicates(source: str, names: list[str]) -> list[str]:
    seen: set[str] = set()
    problems = []
    for name in names:
        if name in seen:
            problems.append(f"{source}: alerts: destination '{name}': name already used; hint: give each "
                            "destination its own 'name:'")
        seen.add(name)
    return problems
