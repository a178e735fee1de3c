"""Print bot recall and browser false-positive rate of riskgate's UA classifier.

    python bench/ua_report.py [-v]     # -v also lists the misses and false flags

Data: ../shared/data/useragents (labelled_user_agents.csv without `conflict` rows,
and isbot's browsers.yml without its two groups of bots).
"""

from __future__ import annotations

import csv
import sys
from collections import Counter

import yaml
from harness import SHARED_DATA

from riskgate.signals.useragent import UAClassifier

DATA = SHARED_DATA / "useragents"


def main(verbose: bool) -> None:
    classify = UAClassifier()
    with (DATA / "labelled_user_agents.csv").open(newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r["label"] in ("bot", "human")]
    bots = [r for r in rows if r["label"] == "bot"]
    humans = [r for r in rows if r["label"] == "human"]
    missed = [r for r in bots if not classify(r["user_agent"]).is_bot]
    flagged = [r for r in humans if classify(r["user_agent"]).is_bot]
    groups = yaml.safe_load((DATA / "isbot" / "browsers.yml").read_text(encoding="utf-8"))
    browsers = [ua for g, uas in groups.items() if "Insignificat bots" not in g for ua in uas]
    browsers_flagged = [ua for ua in browsers if classify(ua).is_bot]
    print(f"bot recall            {1 - len(missed) / len(bots):7.2%}  "
          f"({len(bots) - len(missed)}/{len(bots)})")
    print(f"human false positives {len(flagged) / len(humans):7.2%}  "
          f"({len(flagged)}/{len(humans)})")
    print(f"isbot browsers.yml    {len(browsers_flagged)} of {len(browsers)} flagged")
    print("missed bots by kind:  ",
          ", ".join(f"{k} {n}" for k, n in Counter(r["kind"] for r in missed).most_common()))
    if verbose:
        for r in missed:
            print("MISSED ", r["kind"], r["user_agent"])
        for r in flagged:
            print("FLAGGED", r["user_agent"])
        for ua in browsers_flagged:
            print("BROWSER", ua)


if __name__ == "__main__":
    main("-v" in sys.argv)
