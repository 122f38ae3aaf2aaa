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


class StateLocked(PipelineError):
    """Another process holds the output folder's state lock (a watcher, another batch run)."""

    def __init__(self, output_dir: object, holder: str) -> None:
        self.holder = holder
        super().__init__(
            f"output folder '{output_dir}' is in use by another run: {holder}; stop it, run with "
            "--wait-lock to wait for it to finish, or choose another --output-dir"
        )


class ForeignState(PipelineError):
    """The output folder holds the counts of another data folder; mixing them would merge both."""

    def __init__(self, output_dir: object, bound_to: str, data_dir: str) -> None:
        super().__init__(
            f"output folder '{output_dir}' holds the counts of data folder '{bound_to}', not of "
            f"'{data_dir}'; run with --reset to count '{data_dir}' from nothing there, or choose "
            "another --output-dir"
        )
