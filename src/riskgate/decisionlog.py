"""The decision log: one JSON line per decision, written off the event loop.

Each line records enough of the request — its facts, with identities already keyed —
for ``riskgate replay`` to re-run it under other rules. Serialising and writing
happen on one background thread so a slow disk or a full pipe never stalls
requests; when the queue is full, lines are dropped and counted rather than
blocking the gateway.
"""

from __future__ import annotations

import json
import logging
import queue
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Final

logger = logging.getLogger(__name__)

_STOP: Final = object()


class DecisionLog:
    """Appends JSON lines to a file, or to standard output with ``"-"``.

    >>> import io
    >>> out = io.StringIO()
    >>> log = DecisionLog(out)
    >>> log.write({"request_id": "r1", "decision": "allow"})
    >>> log.close()
    >>> out.getvalue()
    '{"request_id":"r1","decision":"allow"}\\n'
    """

    def __init__(self, target: str | Path | IO[str], max_queued: int = 100_000) -> None:
        if isinstance(target, (str, Path)):
            self._stream: IO[str] = (
                sys.stdout if str(target) == "-" else open(target, "a", encoding="utf-8")  # noqa: SIM115
            )
            self._owns_stream = str(target) != "-"
        else:
            self._stream, self._owns_stream = target, False
        self._queue: queue.Queue[object] = queue.Queue(max_queued)
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name="riskgate-decision-log",
                                        daemon=True)
        self._thread.start()

    def write(self, entry: Mapping[str, Any]) -> None:
        """Queue one line; never blocks."""
        try:
            self._queue.put_nowait(entry)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        while True:
            entry = self._queue.get()
            if entry is _STOP:
                break
            lines = [entry]
            # Drain what has piled up so one flush serves a burst of decisions.
            while len(lines) < 1000:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._flush(lines)
                    return
                lines.append(more)
            self._flush(lines)

    def _flush(self, entries: list[object]) -> None:
        try:
            self._stream.write(
                "".join(json.dumps(e, separators=(",", ":"), default=str) + "\n" for e in entries)
            )
            self._stream.flush()
        except (OSError, ValueError) as exc:  # a closed or full target must not kill the thread
            self.dropped += len(entries)
            logger.warning("decision log write failed, %d lines lost: %s", len(entries), exc)

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._queue.put(_STOP)
        self._thread.join(timeout=10)
        if self._owns_stream:
            self._stream.close()
