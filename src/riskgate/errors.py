"""Every error riskgate raises on purpose.

    RiskGateError
    ├── SourceError            a file the user wrote is wrong (names file, line, column)
    │   ├── ConfigError        the configuration file
    │   └── RuleSetError       a rule set: carries every problem found, not just the first
    ├── InputError             one request to the decision API is malformed (-> 400)
    ├── StoreError             the counter store failed (Redis down, timeout, script error)
    │   └── StoreVersionError  the store's server is too old to run riskgate's script
    └── SignalSourceError      a signal source (GeoIP database, ...) cannot be used

Library code raises these; only ``cli.py`` turns them into exit codes and only
``riskgate.http`` turns them into HTTP answers. Messages say what went wrong, where and
what was expected, and never quote raw account ids, emails or secrets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


class RiskGateError(Exception):
    """Base of every deliberate riskgate error."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in a user-written file, located precisely.

    >>> str(Problem("rules/login.yaml", 12, 9, "unknown counter `x`", rule="r1"))
    'rules/login.yaml:12:9: rule r1: unknown counter `x`'
    """

    file: str
    line: int | None
    column: int | None
    message: str
    rule: str | None = None
    severity: str = "error"

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        rule = f"rule {self.rule}: " if self.rule else ""
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{rule}{self.message}"


class SourceError(RiskGateError):
    """A user-written file is wrong; ``problems`` says where and how to fix it."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigError(SourceError):
    """The configuration file cannot be used as written.

    ``rules`` is the rule folder the file names, when that much could be read, so a
    caller can report the rule set's problems in the same run.
    """

    def __init__(self, problems: Sequence[Problem], rules: Path | None = None) -> None:
        super().__init__(problems)
        self.rules = rules


class RuleSetError(SourceError):
    """A rule set failed validation; the previously loaded set keeps serving."""


class InputError(RiskGateError):
    """A decision API request is malformed.

    ``field`` is the JSON path of the offending value (``"headers.accept"``), or
    None when the body is not JSON at all.
    """

    def __init__(self, message: str, field: str | None, status: int = 400) -> None:
        self.message = message
        self.field = field
        self.status = status
        super().__init__(message)


class StoreError(RiskGateError):
    """The counter store could not answer; decisions go on, marked degraded."""


class StoreVersionError(StoreError):
    """The store answers but cannot run riskgate's script: start-up stops with the fix."""


class SignalSourceError(RiskGateError):
    """A signal source such as a MaxMind database cannot be opened or read."""
