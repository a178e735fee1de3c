"""The ``riskgate`` command (CONTRACT §6); the only place errors become exit codes.

Exit codes: 0 success, 1 a check or test found problems, 2 bad input (a config, a
rule set or a file that cannot be used). Problems go to standard error, one per line.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from riskgate import __version__
from riskgate.errors import RiskGateError, SourceError

if TYPE_CHECKING:
    from riskgate.rules.runtime_lists import RuntimeLists

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _report(error: RiskGateError) -> int:
    lines = [str(p) for p in error.problems] if isinstance(error, SourceError) else [str(error)]
    for line in lines:
        print(f"riskgate: {line}", file=sys.stderr)
    return EXIT_BAD_INPUT


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from riskgate.config import load_config
    from riskgate.errors import ConfigError, RuleSetError
    from riskgate.http.app import CONFIG_ENV
    from riskgate.http.server import MAX_HEADER_BYTES_ENV
    from riskgate.rules.loader import load_ruleset
    from riskgate.service import prepare

    try:
        config = load_config(args.config)
    except ConfigError as error:
        # Every problem in one run: the rule set's too, when the config names it.
        problems = list(error.problems)
        if error.rules is not None:
            try:
                load_ruleset(error.rules)
            except RuleSetError as rules_error:
                problems += rules_error.problems
        raise ConfigError(problems) from None
    # Refuse to start on a bad rule set, with its problems, before workers fork.
    for warning in prepare(config).warnings:
        print(f"riskgate: warning: {warning}", file=sys.stderr)
    if config.store.startswith("memory:") and args.workers > 1:
        print(f"riskgate: warning: memory:// is per process, so each of the {args.workers} "
              "workers counts alone; use redis:// to share counters", file=sys.stderr)
    os.environ[CONFIG_ENV] = str(Path(args.config).resolve())
    os.environ[MAX_HEADER_BYTES_ENV] = str(config.max_header_bytes)
    # proxy_headers=False: riskgate applies trusted_proxies itself (CONTRACT §3);
    # uvicorn's own handling would trust X-Forwarded-For from 127.0.0.1 before we look.
    # As a reverse proxy, the upstream's Date and Server headers pass through unchanged
    # (CONTRACT §3); uvicorn adding its own would send each twice.
    own_headers = config.upstream is None
    with _metrics_shared_by(args.workers):
        uvicorn.run("riskgate.http.app:create_app_from_env", factory=True, host=args.host,
                    port=args.port, workers=args.workers, access_log=False, log_level="info",
                    proxy_headers=False, server_header=own_headers, date_header=own_headers,
                    http="riskgate.http.server:BoundedHeadProtocol")
    return EXIT_OK


@contextlib.contextmanager
def _metrics_shared_by(workers: int) -> Iterator[None]:
    """Give the workers one folder for their metrics, so any of them answers for all.

    The workers are spawned (fresh interpreters that inherit the environment), so
    setting it here reaches them before they import prometheus_client. A folder the
    operator set is used as it is; ours is removed when the server stops.
    """
    from riskgate.observability.metrics import MULTIPROCESS_ENV

    if workers < 2 or os.environ.get(MULTIPROCESS_ENV):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="riskgate-metrics-") as folder:
        os.environ[MULTIPROCESS_ENV] = folder
        try:
            yield
        finally:
            del os.environ[MULTIPROCESS_ENV]


def _demo(args: argparse.Namespace) -> int:
    import uvicorn

    from riskgate.config import load_config
    from riskgate.http.demo import DEMO_PASSWORD, demo_upstream

    config = load_config(args.config)  # a bad config stops here, before anything starts
    token = config.admin_tokens[0] if config.admin_tokens else "(none configured)"
    log = config.decision_log or "(off)"

    # The demo upstream runs in a thread so the gateway keeps the main thread and
    # with it uvicorn's Ctrl-C handling: one Ctrl-C stops both.
    upstream = uvicorn.Server(uvicorn.Config(demo_upstream(), host=args.host,
                                             port=args.upstream_port, log_level="warning"))
    threading.Thread(target=upstream.run, name="demo-upstream", daemon=True).start()
    base = f"http://{args.host}:{args.port}"
    # One proxied request per protected flow, dressed as a browser: the shipped rules
    # challenge curl's own User-Agent, which is worth seeing too (drop the -A).
    json = "-H 'content-type: application/json'"
    browser = "-A 'Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0' " \
              "-H 'accept-language: en'"
    print(f"""
riskgate demo: gateway {base}  (demo airline upstream http://{args.host}:{args.upstream_port},
which {args.config} names as `upstream`); -i shows X-RiskGate-Decision and -Request-Id.
  registration: curl -si {browser} \\
                    {base}/api/register {json} \\
                     -d '{{"email": "new@example.com", "password": "s3cret-pass"}}'
  login:        curl -si {browser} \\
                    {base}/api/login {json} \\
                     -d '{{"username": "alice@example.com", "password": "{DEMO_PASSWORD}"}}'
                (a wrong password is a 401, counted as a failed login; the answer's
                token signs the next two requests in: export TOKEN=...)
  promotion:    curl -si {browser} \\
                    -X POST {base}/api/promotions/SPRING/redeem \\
                     -H 'X-Account-Id: alice@example.com' -H "Authorization: Bearer $TOKEN"
  booking:      curl -si {browser} \\
                    {base}/api/bookings -H 'X-Account-Id: alice@example.com' \\
                     -H "Authorization: Bearer $TOKEN" {json} -d '{{"flight": "RG100", "seats": 2}}'
  pages:        {base}/ (flights), /login, /register, /promo in a browser
  decision API: curl -s {base}/v1/decide {json} \\
                     -d '{{"event": "login", "ip": "203.0.113.5", "account": "alice@example.com"}}'
  curl -s {base}/readyz       curl -s {base}/metrics
  admin:        curl -s {base}/admin/lists -H "Authorization: Bearer {token}"
  decisions:    one JSON line each in {log}
Ctrl-C stops both.
""", flush=True)
    return _serve(args)


def _rules_check(args: argparse.Namespace) -> int:
    from riskgate.config import load_config
    from riskgate.errors import RuleSetError
    from riskgate.rules.loader import load_ruleset
    from riskgate.rules.wiring import config_warnings

    # Without a config nothing is known of the deployment's sources and routes, so only
    # the rules themselves are judged.
    config = load_config(args.config) if args.config else None
    try:
        ruleset = load_ruleset(args.path)
    except RuleSetError as error:
        _report(error)
        return EXIT_FAILED
    warnings = [*ruleset.warnings, *(config_warnings(ruleset, config) if config else [])]
    for warning in warnings:
        print(f"riskgate: {warning}", file=sys.stderr)
    print(f"{args.path}: {len(ruleset.rules)} rules, {len(ruleset.counters)} counters, "
          f"version {ruleset.version}: OK")
    return EXIT_OK


def _rules_test(args: argparse.Namespace) -> int:
    from riskgate.rules.loader import load_ruleset
    from riskgate.rules.testing import run_rule_tests

    results = run_rule_tests(load_ruleset(args.path))
    failed = [r for r in results if not r.passed]
    for result in results:
        print(result)
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return EXIT_FAILED if failed else EXIT_OK


def _replay(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from riskgate.replay import replay
    from riskgate.rules.loader import load_ruleset

    report = asyncio.run(replay(args.log, load_ruleset(args.rules), samples=args.samples))
    if report.skipped and not report.decisions and not report.feedback and report.first_skipped:
        line, reason = report.first_skipped
        print(f"riskgate: {args.log}: not a decision log: none of its {report.skipped} lines "
              f"could be read (line {line}: {reason})", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(json.dumps(report.to_json(), indent=2) if args.json else report)
    return EXIT_OK


def _lists(args: argparse.Namespace) -> int:
    """``riskgate lists add|remove|show``: edit the runtime lists in the configured store."""
    import asyncio

    from riskgate.config import load_config
    from riskgate.service import runtime_lists

    config = load_config(args.config)
    if config.store.startswith("memory:"):
        print(f"riskgate: {args.config} uses store memory://, which lives inside the running "
              "server's process and cannot be reached from here; use the admin API "
              "(GET/POST /admin/lists, DELETE /admin/lists/ID) or a redis:// store",
              file=sys.stderr)
        return EXIT_BAD_INPUT

    async def run() -> int:
        lists = runtime_lists(config)
        try:
            code: int = await args.lists_run(lists, args)
            return code
        finally:
            await lists.store.close()

    return asyncio.run(run())


def _when(seconds: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _lists_add(lists: RuntimeLists, args: argparse.Namespace) -> int:
    from riskgate.rules.runtime_lists import parse_ttl

    entry = await lists.add(args.kind, args.value, args.action, parse_ttl(args.ttl),
                            args.reason, time.time())
    print(f"{entry.id}\t{entry.rule} until {_when(entry.expires)}")
    return EXIT_OK


async def _lists_remove(lists: RuntimeLists, args: argparse.Namespace) -> int:
    if await lists.remove(args.id, time.time()):
        print(f"removed {args.id}")
        return EXIT_OK
    print(f"riskgate: no live runtime list entry has id {args.id}; `riskgate lists show` "
          "lists them", file=sys.stderr)
    return EXIT_FAILED


async def _lists_show(lists: RuntimeLists, _: argparse.Namespace) -> int:
    # One tab-separated line per entry: id, action, kind, value (keyed for device and
    # account), expiry (UTC), reason.
    for e in await lists.entries(time.time()):
        print("\t".join((e.id, e.action, e.kind, e.value, _when(e.expires), e.reason)))
    return EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="riskgate",
                                     description="Bot and scalper risk-control gateway.")
    parser.add_argument("--version", action="version", version=f"riskgate {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def server_options(command: argparse.ArgumentParser) -> None:
        command.add_argument("--host", default="127.0.0.1")
        command.add_argument("--port", type=int, default=8000)
        command.add_argument("--workers", type=int, default=1)

    serve = commands.add_parser("serve", help="run the gateway and decision API")
    serve.add_argument("--config", required=True, help="the riskgate.yaml to serve")
    server_options(serve)
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="run the gateway in front of a demo airline app")
    demo.add_argument("--config", default="examples/demo.yaml")
    demo.add_argument("--upstream-port", type=int, default=9000)
    server_options(demo)
    demo.set_defaults(run=_demo)

    rules = commands.add_parser("rules", help="check and test rule files")
    rule_commands = rules.add_subparsers(dest="rules_command", required=True, metavar="COMMAND")
    check = rule_commands.add_parser("check", help="validate a rule file or folder")
    check.add_argument("path")
    check.add_argument("--config", help="the riskgate.yaml the rules serve under: also warn "
                                        "about sources it does not configure and attributes "
                                        "its routes deliver as text")
    check.set_defaults(run=_rules_check)
    test = rule_commands.add_parser("test", help="run the tests a rule set carries")
    test.add_argument("path")
    test.set_defaults(run=_rules_test)

    replay = commands.add_parser("replay", help="what candidate rules would have decided on a "
                                                "decision log")
    replay.add_argument("log", help="a decision log (JSON lines) written by riskgate")
    replay.add_argument("--rules", required=True, help="the candidate rule file or folder")
    replay.add_argument("--samples", type=int, default=3,
                        help="request ids shown per changed decision (default 3)")
    replay.add_argument("--json", action="store_true", help="print the report as JSON")
    replay.set_defaults(run=_replay)

    lists = commands.add_parser("lists", help="temporary block/allow entries (runtime lists)")
    list_commands = lists.add_subparsers(dest="lists_command", required=True, metavar="COMMAND")
    add = list_commands.add_parser("add", help="block or allow an IP, CIDR, device or account")
    # Kinds, actions and limits are checked by RuntimeLists.add, in one place.
    add.add_argument("--kind", required=True, help="ip, cidr, device or account")
    add.add_argument("--value", required=True,
                     help="the address or network; the raw device or account id (keyed "
                          "before it is stored)")
    add.add_argument("--action", required=True, help="block or allow")
    add.add_argument("--ttl", required=True, help="how long: seconds, or 30m, 1h, 7d (<= 30d)")
    add.add_argument("--reason", required=True, help="why, for whoever finds it later")
    add.set_defaults(lists_run=_lists_add)
    remove = list_commands.add_parser("remove", help="remove an entry by id")
    remove.add_argument("id")
    remove.set_defaults(lists_run=_lists_remove)
    show = list_commands.add_parser("show", help="list the live entries")
    show.set_defaults(lists_run=_lists_show)
    for command in (add, remove, show):
        command.add_argument("--config", required=True, help="the riskgate.yaml naming the store")
        command.set_defaults(run=_lists)

    model = commands.add_parser("model", help="the online model's snapshots")
    model_commands = model.add_subparsers(dest="model_command", required=True, metavar="COMMAND")
    model_show = model_commands.add_parser(
        "show", help="what a snapshot holds: samples per flow, warm-up, label counts")
    model_show.add_argument("snapshot", help="a snapshot file, or the configured path "
                                             "(every worker slot's file is shown)")
    model_show.add_argument("--config", required=True,
                            help="the riskgate.yaml whose secret signed the snapshot")
    model_show.set_defaults(run=_model_show)
    return parser


def _model_show(args: argparse.Namespace) -> int:
    """``riskgate model show``: one JSON document per snapshot file, or why it is unusable."""
    import json

    from riskgate.config import load_config
    from riskgate.model.snapshot import read, slot_files
    from riskgate.service import restore_model

    config = load_config(args.config)
    path = Path(args.snapshot)
    files = [path] if path.is_file() else slot_files(path)
    if not files:
        print(f"riskgate: {path}: no snapshot there (nor slot files {path.name}.N)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    unusable = 0
    for file in files:
        state, why = read(file, config.secret.encode())
        model, mismatch = restore_model(config.model, state)
        why = why or mismatch
        if why is not None:
            unusable += 1
            print(f"riskgate: {why}", file=sys.stderr)
            continue
        print(json.dumps({"snapshot": str(file), "detector": model.detector,
                          "warmup_samples": model.warmup, "min_labels": model.min_labels,
                          "flows": model.summary()}, indent=2))
    return EXIT_BAD_INPUT if unusable else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        code: int = args.run(args)
    except RiskGateError as error:
        return _report(error)
    except BrokenPipeError:
        # The reader (`| head`) went away: not an error worth a traceback. Point stdout
        # at /dev/null so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    return code
