"""``make loadtest``: the demo airline, Redis and ``riskgate serve`` on free ports, then
locust headless against the gateway for a bounded time.

    python loadtest/run.py --seed 1 --duration 240 [--out loadtest/out] [--rules rules]

Everything runs on 127.0.0.1 and is stopped at the end, whatever happens. The
gateway's decision log goes to ``OUT/decisions.jsonl`` (for ``riskgate replay``);
locust writes ``OUT/locust_*.csv`` and ``OUT/report.html``; the table is printed and
written to ``OUT/summary.txt``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))
from support import SHARED_DATA, RedisServer, free_port, riskgate_serve, stop_process  # noqa: E402

_CONFIG = """\
upstream: http://127.0.0.1:{upstream_port}
trusted_proxies: [127.0.0.1/32]
store: {store}
rules: {rules}
secret: ${{RISKGATE_SECRET}}
device_id: header:X-Device-Id
decision_log: {log}
watch_rules: false
geoip:
  city: {data}/maxmind/test-data/GeoIP2-City-Test.mmdb
signals:
  datacenter_networks: [{data}/iplists/x4bnet-lists_vpn/datacenter/ipv4.txt]
  disposable_email_domains: {data}/email/disposable-email-domains/disposable_email_blocklist.conf
  disposable_email_allowlist: {data}/email/disposable-email-domains/allowlist.conf
routes:
  - {{path: /api/register, method: POST, event: registration, account: body:email}}
  - {{path: /api/login, method: POST, event: login, account: body:username,
     failure_statuses: [401]}}
  - {{path: "/api/promotions/{{code}}/redeem", method: POST, event: promotion,
     account: header:X-Account-Id, attributes: {{promo_code: path:code}}}}
  - {{path: /api/bookings, method: POST, event: booking, account: header:X-Account-Id,
     attributes: {{flight: body:flight, seats: {{source: body:seats, type: number}}}}}}
"""


#: The model for a run of minutes: a warm-up the humans reach within the run; no
#: snapshot survives it.
_MODEL = """\
model:
  enabled: true
  snapshot: {snapshot}
  warmup_samples: {warmup}
"""


@contextlib.contextmanager
def demo_airline() -> Iterator[str]:
    """The demo airline on a free port; yields its base URL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "riskgate.http.demo:demo_upstream",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"])
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/api/flights", timeout=1).status_code == 200:
                    break
            time.sleep(0.1)
        else:
            raise RuntimeError("the demo airline did not start within 10 s")
        yield base
    finally:
        stop_process(process)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--duration", type=int, default=240, help="seconds (at most 600)")
    parser.add_argument("--out", type=Path, default=HERE / "out")
    parser.add_argument("--rules", type=Path, default=REPO / "rules")
    parser.add_argument("--model", action="store_true",
                        help="turn the online model on (issue 11: what it adds per persona)")
    parser.add_argument("--warmup", type=int, default=300,
                        help="with --model: allowed requests per flow before it scores")
    args = parser.parse_args(argv)
    duration = max(10, min(args.duration, 600))
    out: Path = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="riskgate-loadtest-") as tmp:
        redis_server = RedisServer(Path(tmp))
        redis_server.start()
        try:
            with demo_airline() as upstream:
                config = Path(tmp) / "riskgate.yaml"
                config.write_text(_CONFIG.format(
                    upstream_port=upstream.rsplit(":", 1)[1], store=redis_server.url,
                    rules=args.rules.resolve(), log=out / "decisions.jsonl", data=SHARED_DATA)
                    + (_MODEL.format(snapshot=Path(tmp) / "model.snapshot", warmup=args.warmup)
                       if args.model else ""))
                env = {"RISKGATE_SECRET": "loadtest-secret-0123456789abcdef"}
                with riskgate_serve(config, env=env) as (gateway, _):
                    return run_locust(gateway, upstream, args.seed, duration, out)
        finally:
            redis_server.stop()


def run_locust(gateway: str, upstream: str, seed: int, duration: int, out: Path) -> int:
    users = subprocess.run(
        [sys.executable, "-c", "import locust, locustfile; print(locustfile.USERS)"], cwd=HERE,
        capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    env = {**os.environ, "LOADTEST_SEED": str(seed), "LOADTEST_UPSTREAM": upstream,
           "LOADTEST_OUT": str(out)}
    result = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(HERE / "locustfile.py"), "--headless",
         "--users", users, "--spawn-rate", users, "--run-time", f"{duration}s",
         "--stop-timeout", "20", "--host", gateway, "--csv", str(out / "locust"),
         "--html", str(out / "report.html"), "--only-summary", "--loglevel", "WARNING"],
        env=env, check=False, timeout=duration + 120)
    summary = out / "summary.txt"
    if not summary.exists():
        print("loadtest: locust ended without a summary", file=sys.stderr)
        return 1
    # locust exits 1 when any request failed (5xx, refused connections); the table says
    # how the personas fared, so that is reported and not hidden.
    return 0 if result.returncode in (0, 1) else result.returncode


if __name__ == "__main__":
    sys.exit(main())
