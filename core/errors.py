"""The one exception tree of the engine; only the CLI turns these into messages and exit codes."""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the engine raises on purpose."""


class ConfigError(PipelineError):
    """The settings, rule files or plugins are wrong; carries every problem found at once."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class DataDirError(PipelineError):
    """The data folder cannot be used (missing, not a folder, unreadable)."""


class OutputValidationError(PipelineError):
    """An output failed its JSON Schema; it was not written."""

    def __init__(self, output: str, problems: list[str]) -> None:
        self.output = output
        self.problems = list(problems)
        super().__init__(f"{output}: " + "; ".join(self.problems))


class FailedToLoadPlugin(ConfigError):
    """A plugin module named in settings or an entry point could not be imported."""

    def __init__(self, plugin: str, exc: BaseException) -> None:
        self.plugin = plugin
        super().__init__([f"plugin '{plugin}' failed to load: {type(exc).__name__}: {exc}"])


class PluginFailed(PipelineError):
    """Plugin code raised: a rule's method, or a plugin's hook (then ``rule`` is None).

    The run goes on without that rule, or without that plugin's hooks; the outputs list it in
    ``rule_errors``, and the exit code is 3.
    """

    def __init__(self, message: str, *, plugin: str, phase: str, path: str | None, rule: str | None) -> None:
        self.plugin = plugin
        self.phase = phase
        self.path = path
        self.rule = rule
        super().__init__(message)


class RuleExecutionFailed(PluginFailed):
    """A rule's plugin code raised (in ``setup``, ``update``, ``merge``, ``seal`` or ``result``)."""
