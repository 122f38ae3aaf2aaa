"""Build the plugin manager and collect the rule types that plugins register."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterable
from pathlib import Path

import pluggy

from core import hookspecs
from core.errors import ConfigError, FailedToLoadPlugin
from core.guard import each_plugin
from core.rules import Rule

#: The rule types the product ships, loaded by dotted name like any third-party plugin.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "plugins.counts",
    "plugins.top",
    "plugins.hours",
    "plugins.unknown_status",
    "plugins.timestamps",
    "plugins.error_spike",
    "plugins.frequency",
    "plugins.duplicates",
    "plugins.flatline",
)


def get_plugin_manager(
    plugins: Iterable[str] = (), *, load_entrypoints: bool = True, search_path: Path | None = None
) -> pluggy.PluginManager:
    """A fresh manager with the hook specs, the built-ins, entry points and the ``plugins`` named.

    ``search_path`` (the settings file's folder) is where plugin modules listed in settings are
    looked for first, so a ``my_rules.py`` beside ``settings.yaml`` just works. Raises
    ``ConfigError`` naming every module that failed to import, and fails loudly (through
    ``check_pending``) on a hook implementation that matches no spec.
    """
    if search_path is not None and str(search_path) not in sys.path:
        sys.path.insert(0, str(search_path))
    pm = pluggy.PluginManager(hookspecs.NAMESPACE)
    pm.add_hookspecs(hookspecs)
    failures: list[str] = []
    for dotted in (*DEFAULT_PLUGINS, *plugins):
        try:
            register_module(pm, dotted)
        except FailedToLoadPlugin as exc:
            failures.extend(exc.problems)
    if load_entrypoints:
        try:
            pm.load_setuptools_entrypoints(hookspecs.NAMESPACE)
        except Exception as exc:  # a broken third-party package must not hide which one it was
            failures.append(f"plugin entry point in group '{hookspecs.NAMESPACE}' failed to load: {exc}")
    if failures:
        raise ConfigError(failures)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        name = pm.get_name(exc.plugin) or repr(exc.plugin)
        raise ConfigError([f"plugin '{name}': {exc}; hint: check the hook's name in core/hookspecs.py"]) from None
    return pm


def register_module(pm: pluggy.PluginManager, dotted: str) -> None:
    """Import ``dotted`` and register it under its own name (once)."""
    if pm.has_plugin(dotted):
        return
    try:
        module = importlib.import_module(dotted)
    except Exception as exc:  # any import-time failure is the plugin's, and must name it
        raise FailedToLoadPlugin(dotted, exc) from exc
    pm.register(module, name=dotted)


def rule_types(pm: pluggy.PluginManager) -> dict[str, type[Rule]]:
    """Every rule type the registered plugins provide, by ``type_name``.

    Each plugin's ``register_rule_types`` is called on its own, so that a type is known by the
    plugin that registered it (``Rule.plugin``, named when one of its rules fails) and a hook
    that raises is a configuration error naming that plugin.
    """
    found: dict[str, type[Rule]] = {}
    problems: list[str] = []

    def register(cls: type[Rule], plugin: str) -> None:
        if not (isinstance(cls, type) and issubclass(cls, Rule)) or not cls.type_name:
            problems.append(f"rule type {cls!r}: expected a subclass of core.Rule with a type_name")
        elif cls.type_name in found and found[cls.type_name] is not cls:
            other = found[cls.type_name]
            problems.append(
                f"rule type '{cls.type_name}' is registered twice: by {other.__module__} and {cls.__module__}"
            )
        else:
            found[cls.type_name] = cls
            if "plugin" not in cls.__dict__:  # the first plugin to register a class names it
                cls.plugin = plugin

    for plugin, call in each_plugin(pm, "register_rule_types"):
        try:
            call(register=lambda cls, plugin=plugin: register(cls, plugin))
        except Exception as exc:  # a plugin's bug at start-up: a configuration error that names it
            problems.append(f"plugin '{plugin}': register_rule_types raised {type(exc).__name__}: {exc}")
    if problems:
        raise ConfigError(problems)
    return found


def shipped(cls: type) -> bool:
    """Whether a rule type comes with the project (a default plugin): its schemas are checked by the tests."""
    return cls.__module__ in DEFAULT_PLUGINS
