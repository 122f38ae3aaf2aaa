"""The alert destinations the product ships: ``webhook`` (HTTP POST of JSON), ``command`` and ``email`` (SMTP).

Each is a ``core.alerts.Alerter`` registered through ``register_alerters``, the hook a
third-party plugin uses to add another (Slack, PagerDuty, ...). Secrets never come from the
settings file: a webhook's headers and an SMTP password are read from environment variables
named in it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

from core import __version__, hookimpl
from core.alerts import DURATION, Alerter, Message, seconds

_ENV_NAME = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "title": "an environment variable's name"}
#: Headers that carry credentials: refused in ``headers`` (the file), taken from ``headers_from_env``.
SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie", "x-api-key")


def _env(field: str, name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"{field}: environment variable {name} is not set (or empty); hint: export it in the "
                         "environment the pipeline runs in")
    return value


class Webhook(Alerter):
    """POST the message as JSON to ``url``; any answer but 2xx (or no answer within ``timeout``) is a failure."""

    type_name = "webhook"
    description = "HTTP POST of the message as JSON."
    params_schema = {
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "pattern": r"^https?://[^\s]+$", "title": "an http:// or https:// URL"},
            "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            "headers_from_env": {"type": "object", "additionalProperties": _ENV_NAME},
            "timeout": DURATION,
        },
    }

    def setup(self, url: str, headers: dict[str, str] | None = None,
              headers_from_env: dict[str, str] | None = None, timeout: str = "10s") -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.username or parts.password:
            raise ValueError("url: expected a URL without a user or password, got one with credentials; hint: "
                             "send them as a header with headers_from_env")
        for name in headers or {}:
            if name.lower() in SECRET_HEADERS:
                raise ValueError(f"headers.{name}: expected no credentials in the settings file; hint: name an "
                                 f"environment variable instead, headers_from_env: {{{name}: MY_TOKEN_VARIABLE}}")
        self.url = url
        self.headers = dict(headers or {})
        self.from_env = dict(headers_from_env or {})
        for name, variable in self.from_env.items():
            _env(f"headers_from_env.{name}", variable)
        self.timeout = seconds(timeout)

    def send(self, message: Message) -> None:
        # Imported when an alert is sent: with ssl and email, 10 ms of every start otherwise.
        import urllib.error
        import urllib.request

        headers = {"Content-Type": "application/json", "User-Agent": f"ohmypayments/{__version__}", **self.headers,
                   **{name: os.environ.get(variable, "") for name, variable in self.from_env.items()}}
        body = json.dumps(message.document(), ensure_ascii=False).encode("utf-8")
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:  # noqa: S310 (http(s) only)
                response.read()
        except urllib.error.HTTPError as exc:  # the server answered, with an error: say which
            raise RuntimeError(f"{self.url} answered {exc.code} {exc.reason}") from None


class Command(Alerter):
    """Run ``argv`` (no shell) with the message's JSON on its standard input; a non-zero exit is a failure.

    It runs in the settings file's folder, where a relative program path (``./notify.sh``) starts too.
    """

    type_name = "command"
    description = "A program run with the message as JSON on stdin."
    params_schema = {
        "required": ["argv"],
        "properties": {
            "argv": {"type": "array", "minItems": 1, "items": {"type": "string", "minLength": 1}},
            "timeout": DURATION,
        },
    }

    def setup(self, argv: list[str], timeout: str = "30s") -> None:
        program = argv[0]
        if "/" in program:  # a path: relative to the settings file's folder
            path = Path(program) if Path(program).is_absolute() or self.base_dir is None else self.base_dir / program
            if not os.access(path, os.X_OK) or not path.is_file():
                raise ValueError(f"argv[0]: expected an executable file, got {program!r} ({path} is not one)")
            program = str(path)
        elif shutil.which(program) is None:
            raise ValueError(f"argv[0]: expected a program on PATH, got {program!r}, which is not found")
        self.argv = [program, *argv[1:]]
        self.timeout = seconds(timeout)

    def send(self, message: Message) -> None:
        data = json.dumps(message.document(), ensure_ascii=False).encode("utf-8")
        try:
            done = subprocess.run(self.argv, input=data, capture_output=True, timeout=self.timeout, check=False,
                                  cwd=self.base_dir)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.argv[0]} did not finish within {self.timeout:.0f} s") from None
        if done.returncode != 0:
            said = done.stderr.decode("utf-8", errors="replace").strip().splitlines()
            raise RuntimeError(f"{self.argv[0]} exited with {done.returncode}" + (f": {said[-1]}" if said else ""))


class Email(Alerter):
    """Send the message by SMTP (the standard library's ``smtplib``): the text, and the JSON attached."""

    type_name = "email"
    description = "An e-mail through an SMTP server."
    params_schema = {
        "required": ["from", "to"],
        "properties": {
            "host": {"type": "string", "minLength": 1},
            "port": {"type": "integer", "minimum": 1, "maximum": 65535},
            "from": {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+$", "title": "an e-mail address"},
            "to": {"type": "array", "minItems": 1,
                   "items": {"type": "string", "pattern": r"^[^@\s]+@[^@\s]+$", "title": "an e-mail address"}},
            "security": {"enum": ["none", "starttls", "ssl"]},
            "username": {"type": "string", "minLength": 1},
            "password_from_env": _ENV_NAME,
            "subject_prefix": {"type": "string"},
            "timeout": DURATION,
        },
    }

    def setup(self, to: list[str], host: str = "localhost", port: int | None = None, security: str = "none",
              username: str | None = None, password_from_env: str | None = None,
              subject_prefix: str = "[Oh My Payments]", timeout: str = "30s", **sender: Any) -> None:
        if (username is None) != (password_from_env is None):
            raise ValueError("username, password_from_env: expected both or neither, got one")
        if password_from_env is not None:
            _env("password_from_env", password_from_env)
        self.sender, self.to = sender["from"], list(to)
        self.host, self.security = host, security
        self.port = port or {"none": 25, "starttls": 587, "ssl": 465}[security]
        self.username, self.password_env = username, password_from_env
        self.prefix, self.timeout = subject_prefix, seconds(timeout)

    def send(self, message: Message) -> None:
        import smtplib  # imported when an e-mail is sent, as the webhook's urllib.request
        from email.message import EmailMessage

        mail = EmailMessage()
        mail["Subject"] = f"{self.prefix} {message.subject()}".strip()
        mail["From"], mail["To"] = self.sender, ", ".join(self.to)
        mail.set_content(message.text())
        document = json.dumps(message.document(), indent=2, ensure_ascii=False).encode("utf-8")
        mail.add_attachment(document, maintype="application", subtype="json", filename="incidents.json")
        kind = smtplib.SMTP_SSL if self.security == "ssl" else smtplib.SMTP
        with kind(self.host, self.port, timeout=self.timeout) as smtp:
            if self.security == "starttls":
                smtp.starttls()
            if self.username and self.password_env:
                smtp.login(self.username, os.environ.get(self.password_env, ""))
            smtp.send_message(mail)


@hookimpl
def register_alerters(register: Any) -> None:
    register(Webhook)
    register(Command)
    register(Email)
