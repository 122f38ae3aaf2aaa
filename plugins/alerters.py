"""The alert destinations the product ships: ``webhook`` (HTTP POST of JSON), ``command`` and ``email`` (SMTP).

Each is a ``core.alerts.Alerter`` registered through ``register_alerters``, the hook a
third-party plugin uses to add another (Slack, PagerDuty, ...). Secrets never come from the
settings file: a webhook's headers and an SMTP password are read from environment variables
named in it.
"""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import signal
import subprocess
import threading
import urllib.parse
from pathlib import Path
from typing import Any

from core import __version__, hookimpl
from core.alerts import DURATION, Alerter, Message, seconds

_ENV_NAME = {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$", "title": "an environment variable's name"}
#: Headers that carry credentials: refused in ``headers`` (the file), taken from ``headers_from_env``.
SECRET_HEADERS = ("authorization", "proxy-authorization", "cookie", "x-api-key")
#: The most of a webhook's answer that is read: it is not used, and an endless one must not fill memory.
ANSWER_BYTES = 64 * 1024
#: The end of a command's standard error kept, for the failure's message; the rest is read and dropped.
STDERR_TAIL_BYTES = 4096


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
        # No redirect is followed: urllib would send the headers (a token) to wherever it points,
        # as a GET without the message, and count the alerts as sent.
        opener = urllib.request.build_opener(_no_redirect())
        try:
            with opener.open(request, timeout=self.timeout) as response:
                response.read(ANSWER_BYTES)  # what the answer says is not used: a body of any size is fine
        except urllib.error.HTTPError as exc:  # the server answered, with an error or a redirect: say which
            where = f" to {exc.headers.get('Location')}" if 300 <= exc.code < 400 and exc.headers else ""
            raise RuntimeError(f"{self.url} answered {exc.code} {exc.reason}{where}; only a 2xx answer is "
                               "a delivery") from None


@functools.cache
def _no_redirect() -> type:
    """A urllib handler that follows no redirect (made when first sent: urllib.request costs start-up time)."""
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None  # the 3xx answer is then an HTTPError

    return NoRedirect


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
        code, tail = _run(self.argv, data, self.timeout, self.base_dir)
        if code is None:
            raise RuntimeError(f"{self.argv[0]} did not finish within {self.timeout:.0f} s; it was killed, "
                               "with whatever it started")
        if code != 0:
            said = tail.decode("utf-8", errors="replace").strip().splitlines()
            raise RuntimeError(f"{self.argv[0]} exited with {code}" + (f": {said[-1]}" if said else ""))


#: The commands running now (their process groups are killed if the engine exits meanwhile).
_RUNNING: set[subprocess.Popen[bytes]] = set()
_RUNNING_LOCK = threading.Lock()


def _run(argv: list[str], data: bytes, timeout: float, cwd: Path | None) -> tuple[int | None, bytes]:
    """Run ``argv`` in a process group of its own with ``data`` on its standard input; its exit code
    (None: killed, with its group, after ``timeout`` seconds) and the end of its standard error.

    Its standard output is dropped and only the last ``STDERR_TAIL_BYTES`` of its standard error
    kept, however much it writes; its input is written by a thread, so that a command that does
    not read it cannot hold the send past ``timeout``.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            cwd=cwd, start_new_session=True)
    with _RUNNING_LOCK:
        _RUNNING.add(proc)
    tail = bytearray()

    def feed() -> None:
        try:
            proc.stdin.write(data)  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except OSError:  # it exited, or closed its input, without reading it all
            pass

    def drain() -> None:
        for block in iter(lambda: proc.stderr.read(65536), b""):  # type: ignore[union-attr]
            tail.extend(block)
            del tail[:-STDERR_TAIL_BYTES]

    helpers = [threading.Thread(target=feed, daemon=True), threading.Thread(target=drain, daemon=True)]
    for helper in helpers:
        helper.start()
    try:
        code: int | None = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        proc.wait()
        code = None
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(proc)
    for helper in helpers:
        helper.join(timeout=1.0)  # a child it started may keep standard error open: not waited for
    return code, bytes(tail)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:  # gone already
        pass


@atexit.register
def _kill_running() -> None:
    """A command still running when the engine exits (a watcher stopped mid-send) is killed, with its group."""
    with _RUNNING_LOCK:
        for proc in list(_RUNNING):
            _kill_group(proc)


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
