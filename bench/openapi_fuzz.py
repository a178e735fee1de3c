"""The schemathesis run of /openapi.json (issue 9), at any size: ``make fuzz-api``.

Starts a throw-away ``redis-server`` and ``riskgate serve`` (the shipped rules, the
Redis store, GeoIP's test databases) on 127.0.0.1, loads the document the server
serves, and runs ``tests/api_fuzz.py`` against it: ``--examples`` valid and as many
invalid generated requests per operation, plus schemathesis's coverage cases. Prints
the number of cases run, the statuses seen and each failure; exits 1 on any failure or
when fewer than ``--min-cases`` ran.

``make test`` runs the same with 500 examples (over 2,000 cases); this script is for
longer runs, e.g. ``--examples 5000`` (about 20,000 cases, a few minutes). Cases are
derandomized: the same examples count makes the same requests.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import harness  # noqa: F401  (puts tests/ on sys.path, for the two imports below)

from api_fuzz import fuzz, write_config
from support import RedisServer, riskgate_serve


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=500,
                        help="generated cases per operation and mode (default 500)")
    parser.add_argument("--min-cases", type=int, default=2000,
                        help="fail when fewer cases ran (default 2000)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="riskgate-fuzz-") as folder:
        directory = Path(folder)
        redis = RedisServer(directory)
        redis.start()
        try:
            with riskgate_serve(write_config(directory, redis.url)) as (base_url, _):
                print(f"riskgate serve at {base_url}, Redis at {redis.url}", flush=True)
                result = fuzz(base_url, args.examples)
        finally:
            redis.stop()
    for label, count in sorted(result.statuses.items()):
        print(f"  {label}: {count}")
    for failure in result.failures:
        print(f"!! {failure}\n")
    print(result.summary())
    if result.total < args.min_cases:
        print(f"!! only {result.total} cases ran; at least {args.min_cases} were asked for")
        return 1
    return 1 if result.failures else 0


if __name__ == "__main__":
    sys.exit(main())
