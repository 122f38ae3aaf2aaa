"""What the alerts sent and still have to send: committed with the checkpoint, so a restart sends nothing twice."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from core import safestate

#: Sent records kept per destination; the oldest beyond it are forgotten (an incident of months ago).
MAX_SENT = 10_000


@safestate.register
@dataclass
class AlertState:
    """The alerts' part of the checkpoint: plain values only (``core.safestate`` stores them as JSON).

    ``sent`` holds, per destination and incident id, ``[status, sent_at]``: the incident's status
    when it was last sent (``open`` or ``resolved``) and when (seconds since the epoch). ``outbox``
    holds the notifications not delivered yet, each a mapping with ``destination``, ``id``,
    ``event`` (``opened``, ``resolved`` or ``repeat``), the ``incident`` as it will be sent,
    ``queued_at``, ``attempts``, ``next_try`` and the last ``error``. ``counts`` is the incidents
    delivered per destination since the state began; ``last_record_at`` when a new record last
    arrived (watch mode); ``no_data`` the open no-data incident, if any.
    """

    sent: dict[str, dict[str, list[Any]]] = field(default_factory=dict)
    outbox: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    last_record_at: float | None = None
    no_data: dict[str, Any] | None = None

    def copy(self) -> AlertState:
        return copy.deepcopy(self)

    def forget_oldest(self, keep: set[str]) -> None:
        """Keep at most ``MAX_SENT`` sent records per destination; never those of ids in ``keep`` (listed now)."""
        for records in self.sent.values():
            if len(records) > MAX_SENT:
                old = sorted((at, ident) for ident, (_, at) in records.items() if ident not in keep)
                for _, ident in old[: len(records) - MAX_SENT]:
                    del records[ident]
