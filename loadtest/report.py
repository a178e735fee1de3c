"""The per-persona table and the last line, from the ledger and the airline's records."""

from __future__ import annotations

from typing import Any

from world import Ledger, PersonaLedger


def goal_successes(persona: PersonaLedger, stats: dict[str, Any]) -> int:
    """How many of the persona's goal actions the airline's records show as granted."""
    if persona.goal is None:
        return 0
    records = stats.get(persona.goal, {})
    if persona.goal == "registrations":
        return sum(1 for email in persona.identities if email in set(records))
    granted = sum(int(records.get(identity, 0)) for identity in persona.identities)
    return min(granted, persona.goal_actions)


def _share(part: int, whole: int) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "-"


def summary(ledger: Ledger, stats: dict[str, Any], seed: int) -> str:
    """One row per persona, then ``bots_goal_success=… humans_challenged=… humans_blocked=…``.

    >>> from world import Ledger
    >>> ledger = Ledger()
    >>> human = ledger.persona("h", "human")
    >>> human.sessions, human.sessions_challenged, human.journeys_completed = 10, 1, 9
    >>> bot = ledger.persona("b", "bot", "holds")
    >>> bot.goal_actions, bot.identities = 20, {"x@example.com"}
    >>> print(summary(ledger, {"holds": {"x@example.com": 1}}, 7).splitlines()[-1])
    bots_goal_success=5.00% humans_challenged=10.00% humans_blocked=0.00%
    """
    head = (f"{'persona':<26}{'requests':>9}{'allow':>7}{'chall':>7}{'block':>7}   "
            f"{'sessions':>8}{'challenged':>11}{'blocked':>9}{'completed':>10}   "
            f"{'goal':>6}{'granted':>8}{'share':>8}")
    lines = [f"loadtest seed={seed}", head, "-" * len(head)]
    totals = {"goal": 0, "granted": 0, "sessions": 0, "challenged": 0, "blocked": 0}
    for side in ("human", "bot"):
        for name, persona in sorted(ledger.personas.items()):
            if persona.side != side:
                continue
            d = persona.decisions
            row = (f"{name:<26}{persona.requests:>9}{d['allow']:>7}{d['challenge']:>7}"
                   f"{d['block']:>7}   ")
            if side == "human":
                row += (f"{persona.sessions:>8}"
                        f"{_share(persona.sessions_challenged, persona.sessions):>11}"
                        f"{_share(persona.sessions_blocked, persona.sessions):>9}"
                        f"{_share(persona.journeys_completed, persona.sessions):>10}")
                totals["sessions"] += persona.sessions
                totals["challenged"] += persona.sessions_challenged
                totals["blocked"] += persona.sessions_blocked
            else:
                granted = goal_successes(persona, stats)
                row += (f"{'':>38}   {persona.goal_actions:>6}{granted:>8}"
                        f"{_share(granted, persona.goal_actions):>8}")
                totals["goal"] += persona.goal_actions
                totals["granted"] += granted
            lines.append(row)
    lines.append(
        f"bots_goal_success={_share(totals['granted'], totals['goal'])} "
        f"humans_challenged={_share(totals['challenged'], totals['sessions'])} "
        f"humans_blocked={_share(totals['blocked'], totals['sessions'])}")
    return "\n".join(lines)
