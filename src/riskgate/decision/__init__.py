"""Matches and thresholds to allow / challenge / block (``verdict``), and the
proof-of-work challenge a ``challenge`` answer asks for (``challenge``)."""

from riskgate.decision.verdict import ACTIONS, Action, Match, Thresholds, Verdict, decide

__all__ = ["ACTIONS", "Action", "Match", "Thresholds", "Verdict", "decide"]
