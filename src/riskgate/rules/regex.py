"""Analyst regexes, run with RE2: time linear in the text, whatever the pattern says.

Python's ``re`` backtracks, so one analyst's ``(a+)+$`` against a long User-Agent
stalls a worker for minutes. RE2 never backtracks; the price is that it refuses what
needs backtracking (look-around, backreferences), and those patterns are refused at
load with the fix instead of being run.

>>> search = compile_search("(?i)headless")
>>> search("Mozilla/5.0 HeadlessChrome/120") is not None
True
>>> compile_search("(a+)+$")("a" * 100_000 + "b") is None
True
>>> try:
...     compile_search("(?<=a)b")
... except RegexError as e:
...     print(str(e).split("; ")[1].split(":")[0])
RE2 has no look-ahead or look-behind
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import re2

#: RE2's message (a prefix of it) -> what the analyst should write instead.
_FIXES: Final[tuple[tuple[str, str], ...]] = (
    ("invalid perl operator: (?=", "RE2 has no look-ahead or look-behind: test the other "
     'part in its own condition, e.g. `matches(s, "b") and not matches(s, "ab")`'),
    ("invalid perl operator: (?!", "RE2 has no look-ahead or look-behind: test the other "
     'part in its own condition, e.g. `matches(s, "b") and not matches(s, "ab")`'),
    ("invalid perl operator: (?<", "RE2 has no look-ahead or look-behind: test the other "
     'part in its own condition, e.g. `matches(s, "b") and not matches(s, "ab")`'),
    ("invalid perl operator: (?x", "write the pattern without verbose mode `(?x)`: no "
     "comments, and spaces only where they must match"),
    ("invalid perl operator: (?", "RE2 knows the inline flags (?i) (?m) (?s) (?U) only; "
     "remove the others (RE2 is always Unicode-aware)"),
    ("invalid escape sequence: \\Z", "write `\\z` (or `$`) for the end of the text"),
    ("invalid escape sequence: \\", "backreferences such as `\\1` and some escapes are not "
     "available in RE2: match the repeated part explicitly, or use a character class"),
    ("invalid repetition size", "a counted repetition such as {1000} allows at most 1000; "
     "use `+` or a smaller count"),
    ("pattern too large", "the pattern compiles to more than RE2's 8 MiB: split it into "
     "several rules or list entries"),
)
_SYNTAX: Final = "RE2 syntax: https://github.com/google/re2/wiki/Syntax"


class RegexError(ValueError):
    """A pattern RE2 cannot run; the message says why and what to write instead."""


def _options(ignore_case: bool) -> Any:
    options = re2.Options()
    options.log_errors = False  # RE2 would print to stderr; the loader reports instead
    options.case_sensitive = not ignore_case
    return options


def compile_search(pattern: str, *, ignore_case: bool = False) -> Callable[[str], Any]:
    """The ``search`` of ``pattern`` under RE2: a match object (truthy) or None.

    Inline flags are written as analysts know them from Python: ``(?i)``, ``(?s)``,
    ``(?m)``. Raise :class:`RegexError` with the fix when RE2 cannot run the pattern.
    """
    try:
        search: Callable[[str], Any] = re2.compile(pattern, _options(ignore_case)).search
    except re2.error as error:
        reason = error.args[0] if error.args else "not a valid pattern"
        reason = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        fix = next((fix for prefix, fix in _FIXES if reason.startswith(prefix)), None)
        if fix is None:  # a plain mistake, wrong in any regex dialect
            raise RegexError(f"bad regex {pattern!r}: {reason}; {_SYNTAX}") from None
        raise RegexError(f"regex {pattern!r} cannot run under RE2, which riskgate uses so "
                         f"that no regex can stall it ({reason}); {fix}") from None
    return search
