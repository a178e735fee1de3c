"""Sliding-window arithmetic shared by every store backend.

A window of ``window_ms`` is cut into :data:`~riskgate.store.base.BUCKETS_PER_WINDOW`
buckets of ``width`` ms. At time ``now`` the window reaches over the current bucket,
the ``BUCKETS_PER_WINDOW - 1`` before it in full, and the part of the oldest one that
is still less than a window old. Both backends compute the span here so that they
agree to the last bit; the Redis script only adds up the buckets it is told to.
"""

from __future__ import annotations

from typing import NamedTuple

from riskgate.store.base import BUCKETS_PER_WINDOW


def to_ms(now: float) -> int:
    """Turn Unix seconds into whole milliseconds, rounding away float noise.

    >>> to_ms(1700000000.123)
    1700000000123
    """
    return round(now * 1000)


class Span(NamedTuple):
    """Which buckets a window covers at one instant."""

    width: int
    """Milliseconds per bucket."""
    current: int
    """Index of the bucket ``now`` falls in; the oldest is ``current - BUCKETS_PER_WINDOW``."""
    weight: float
    """Fraction of the oldest bucket still inside the window, in (0, 1]."""

    @property
    def oldest(self) -> int:
        return self.current - BUCKETS_PER_WINDOW

    @property
    def read_until(self) -> int:
        """When the current bucket leaves the window: a window and a bucket after it began.

        A store may forget a counter whose newest bucket is this old.
        """
        return (self.current + BUCKETS_PER_WINDOW + 1) * self.width

    def slide(self, oldest: int, newer: int) -> float:
        """The sliding count from the oldest bucket's count and the sum of the others.

        >>> window_span(10_000, 1_000_500).slide(oldest=4, newer=6)
        8.0
        """
        return newer + self.weight * oldest


def window_span(window_ms: int, now_ms: int) -> Span:
    """Locate ``now_ms`` in a window of ``window_ms`` cut into buckets.

    Halfway through a bucket, half of the oldest bucket has slid out of the window:

    >>> window_span(10_000, 1_000_500)
    Span(width=1000, current=1000, weight=0.5)
    """
    # Rounding the width up keeps every bucket at least one ms wide and the
    # window at least as long as asked.
    width = max(1, -(-window_ms // BUCKETS_PER_WINDOW))
    offset = now_ms % width
    return Span(width, now_ms // width, (width - offset) / width)
