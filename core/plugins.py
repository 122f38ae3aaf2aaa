"""Build the plugin manager and collect the rule types that plugins register."""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterable
from functools import cache
from importlib import metadata
from pathlib import Path

import pluggy

from core import hookspecs, safestate
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
    "plugins.timeline",
    "plugins.report",
    "plugins.alerters",
)


def get_plugin_manager(
    plugins: Iterable[str] = (), *, load_entrypoints: bool = True, search_path: Path | None = None
) -> pluggy.PluginManager:
    """A fresh manager with the hook specs, the built-ins, entry points and the ``plugins`` named.

    ``search_path`` (the settings file's folder) is where plugin modules listed in settings are
    looked for first, so a ``my_rules.py`` beside ``settings.yaml`` just works; only those
    modules are imported from there (the folder is never put on ``sys.path``, where anything
    beside the settings could stand in for a library). A module of the standard library, of the
    engine or of its dependencies is refused as a plugin. Raises ``ConfigError`` naming every
    module that failed to import, and fails loudly (through ``check_pending``) on a hook
    implementation that matches no spec.
    """
    pm = pluggy.PluginManager(hookspecs.NAMESPACE)
    pm.add_hookspecs(hookspecs)
    failures: list[str] = []
    for dotted in (*DEFAULT_PLUGINS, *plugins):
        refused = None if dotted in DEFAULT_PLUGINS else refusal(dotted)
        if refused:
            failures.append(f"plugin '{dotted}' is refused: it is {refused}, not a plugin; hint: give your "
                            "plugin module a name of its own")
            continue
        try:
            register_module(pm, dotted, search_path)
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


def register_module(pm: pluggy.PluginManager, dotted: str, search_path: Path | None = None) -> None:
    """Import ``dotted`` (from ``search_path`` if it is there) and register it under its own name (once)."""
    if pm.has_plugin(dotted):
        return
    try:
        if search_path is not None:
            _import_from(search_path, dotted.partition(".")[0])
        module = importlib.import_module(dotted)
    except Exception as exc:  # any import-time failure is the plugin's, and must name it
        raise FailedToLoadPlugin(dotted, exc) from exc
    pm.register(module, name=dotted)


def _import_from(folder: Path, top: str) -> None:
    """Import the top-level module or package ``top`` from ``folder`` if it is there, and from nowhere else.

    Its own submodules then come from there too (through the package's ``__path__``); nothing
    else in the folder can be imported by name.
    """
    spec = importlib.machinery.PathFinder.find_spec(top, [str(folder)])
    if spec is None:
        return  # not beside the settings: an installed plugin, imported from sys.path as usual
    loaded = sys.modules.get(top)
    if loaded is not None and getattr(loaded.__spec__, "origin", None) == spec.origin:
        return
    for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
        del sys.modules[name]  # another folder's module of that name (an earlier run in this process)
    module = importlib.util.module_from_spec(spec)
    sys.modules[top] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except BaseException:
        del sys.modules[top]
        raise


#: Top-level packages of the engine itself, which no plugin may be named after.
_ENGINE = ("core",)


def refusal(dotted: str) -> str | None:
    """Why ``dotted`` may not be loaded as a plugin (a library's module, named as a plugin), or None."""
    top = dotted.partition(".")[0]
    if top in sys.stdlib_module_names:
        return "a module of Python's standard library"
    if top in _ENGINE:
        return "Oh My Payments' own engine"
    owner = dependency_modules().get(top)
    return f"a module of a library Oh My Payments depends on ({owner})" if owner else None


@cache
def dependency_modules() -> dict[str, str]:
    """The top-level modules of the engine's dependencies and theirs, each with its distribution's name."""
    modules: dict[str, str] = {}
    for dist in _dependencies():
        names = (dist.read_text("top_level.txt") or "").split() or {
            path.parts[0].partition(".")[0] for path in dist.files or ()
            if path.parts and not path.parts[0].endswith((".dist-info", ".data"))
        }
        modules.update((name, dist.metadata["Name"]) for name in names if name.isidentifier())
    return modules


def _dependencies() -> list[metadata.Distribution]:
    # Read from the installed metadata; run from a source tree, from pyproject.toml.
    try:
        todo = list(metadata.requires(DISTRIBUTION) or ())
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"] if pyproject.exists() else {}
        todo = list(project.get("dependencies", ()))
    seen: dict[str, metadata.Distribution] = {}
    while todo:
        requirement = todo.pop()
        match = _REQUIREMENT.match(requirement)
        name = re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else ""
        if not name or "extra ==" in requirement or name in seen:
            continue
        try:
            seen[name] = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        todo.extend(seen[name].requires or ())
    return list(seen.values())


#: This project's distribution, as pyproject.toml names it.
DISTRIBUTION = "ohmypayments"
_REQUIREMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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
        elif cls.type_name not in found:
            found[cls.type_name] = cls
            cls.plugin = plugin  # named when one of its rules fails
            safestate.register(cls)  # its rules' states may be in a checkpoint, enabled or not now

    registered: dict[str, int] = {}  # plugin -> rule types it registered
    for plugin, call in each_plugin(pm, "register_rule_types"):
        registered[plugin] = 0

        def register_one(cls: type[Rule], plugin: str = plugin) -> None:
            registered[plugin] += 1
            register(cls, plugin)

        try:
            call(register=register_one)
        except Exception as exc:  # a plugin's bug at start-up: a configuration error that names it
            problems.append(f"plugin '{plugin}': register_rule_types raised {type(exc).__name__}: {exc}")
            registered[plugin] = -1  # said already
    problems += _registering_nothing(pm, registered)
    if problems:
        raise ConfigError(problems)
    return found


def _registering_nothing(pm: pluggy.PluginManager, registered: dict[str, int]) -> list[str]:
    """A plugin that would be loaded for nothing: most likely a hook without its ``@hookimpl`` mark."""
    problems = []
    for name, plugin in pm.list_name_plugin():
        if plugin is None:  # a blocked name
            continue
        hooks = pm.get_hookcallers(plugin) or []
        if not hooks:
            problems.append(f"plugin '{name}' registers nothing: it implements no hook; hint: mark each hook "
                            "function with @core.hookimpl")
        elif registered.get(name) == 0 and len(hooks) == 1:
            problems.append(f"plugin '{name}' registers nothing: its register_rule_types registered no rule "
                            "type and it implements no other hook; hint: call register(YourRule) in it")
    return problems


def shipped(cls: type) -> bool:
    """Whether a rule type comes with the project (a default plugin): its schemas are checked by the tests."""
    return cls.__module__ in DEFAULT_PLUGINS
