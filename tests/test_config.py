"""The configuration file: one typed object, every problem located and explained."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from riskgate.config import Config, ValueSource, load_config
from riskgate.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SECRET = "a-test-secret-of-some-length"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "riskgate.yaml"
    path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


def test_the_contract_example_loads_into_typed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISKGATE_SECRET", SECRET)
    monkeypatch.setenv("RISKGATE_ADMIN_TOKEN", "demo-admin-token-0123456789")
    config = load_config(REPO / "examples" / "demo.yaml")
    assert config.secret == SECRET
    assert config.upstream == "http://127.0.0.1:9000"
    assert config.trusted_proxies == (ipaddress.ip_network("127.0.0.1/32"),
                                      ipaddress.ip_network("::1/128"))
    assert config.rules == REPO / "examples" / ".." / "rules"
    assert config.device_id == ValueSource("header", "x-device-id")
    login = config.routes[1]
    assert (login.path, login.method, login.event) == ("/api/login", "POST", "login")
    assert login.account == ValueSource("body", "username")
    assert login.failure_statuses == {401}
    promotion = config.routes[2]
    assert promotion.attributes == {"promo_code": ValueSource("path", "code")}
    assert config.max_body_bytes == 65536 and config.challenge_status == 403


def test_only_the_secret_is_required(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, f"secret: {SECRET}\n"))
    assert config == Config(secret=SECRET, rules=tmp_path / "rules", source=config.source)
    assert config.store == "memory://"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"secret: {SECRET}\nupstrem: http://x\n",
         "2:1: unknown key `upstrem` in the configuration; did you mean `upstream`?"),
        (f"secret: {SECRET}\nstore: postgres://db\n",
         "2:8: store: `postgres://db` is not a store URL; use memory://, redis://host:port/db, "
         "rediss://host:port/db, unix:///path/to/redis.sock or "
         "redis+cluster://host:port[,host:port...]"),
        (f"secret: {SECRET}\nstore: redis+cluster://h1:7000,h2\n",
         "2:8: store: store redis+cluster://h1:7000,h2: `h2` is not host:port; write "
         "redis+cluster://host:port[,host:port...]"),
        (f"secret: {SECRET}\nmax_body_bytes: lots\n",
         "2:17: max_body_bytes must be a whole number, not `lots`"),
        (f"secret: {SECRET}\nmax_body_bytes: 0\n", "2:17: max_body_bytes must be positive"),
        (f"secret: {SECRET}\nmax_body_bytes: 1000000000\n",
         "2:17: max_body_bytes must be at most 67108864 bytes, not 1000000000"),
        (f"secret: {SECRET}\nfeedback_ttl: 0\n",
         "2:15: feedback_ttl must be at least 1 seconds, not 0"),
        (f"secret: {SECRET}\nfeedback_ttl: -5\n",
         "2:15: feedback_ttl must be at least 1 seconds, not -5"),
        (f"secret: {SECRET}\nfeedback_ttl: soon\n",
         "2:15: feedback_ttl must be a number of seconds, not `soon`"),
        (f"secret: {SECRET}\nmax_header_bytes: 100\n",
         "2:19: max_header_bytes must be at least 1024 bytes, not 100"),
        (f"secret: {SECRET}\nmemory_store_max_entries: 5\n",
         "2:27: memory_store_max_entries must be at least 1000 entries, not 5"),
        (f"secret: {SECRET}\nadmin_tokens: ['']\n",
         "2:16: admin_tokens: a token is 0 characters long; use a random value of at least 16"),
        (f"secret: {SECRET}\nadmin_tokens: ['   ']\n",
         "2:16: admin_tokens: a token is 0 characters long; use a random value of at least 16"),
        (f"secret: {SECRET}\nadmin_tokens: [hunter2]\n",
         "2:16: admin_tokens: a token is 7 characters long; use a random value of at least 16"),
        (f"secret: {SECRET}\nchallenge_status: 200\n",
         "2:19: challenge_status must be a 4xx status such as 403 or 429, not 200"),
        (f"secret: {SECRET}\ntrusted_proxies: [10.0.0.300/8]\n",
         "2:19: trusted_proxies: `10.0.0.300/8` is not an IP network such as 10.0.0.0/8 or "
         "::1/128"),
        (f"secret: {SECRET}\nupstream: localhost:9000\n",
         "2:11: upstream: `localhost:9000` is not an http(s) URL such as http://127.0.0.1:9000"),
        (f"secret: {SECRET}\nroutes:\n  - {{path: /api/login, event: signin}}\n",
         "3:31: routes[0].event: unknown event `signin`; use one of registration, login, "
         "promotion, booking"),
        (f"secret: {SECRET}\nroutes:\n  - {{path: /x, event: login, account: form:user}}\n",
         "3:39: routes[0].account: `form:user` is not a value source; write KIND:NAME with KIND "
         "one of body, header, cookie, path, query"),
        (f"secret: {SECRET}\nroutes:\n  - {{path: /x, event: booking, failure_statuses: [401]}}\n",
         "3:50: routes[0].failure_statuses only applies to login routes"),
        ("secret: short\n",
         "1:9: `secret` is 5 characters long; use a random value of at least 16"),
        ("store: memory://\n", "1:1: `secret` is missing; set `secret: ${RISKGATE_SECRET}` and "
         "export a random value of at least 16 characters"),
        ("secret: ${RISKGATE_TEST_UNSET}\n", "1:9: environment variable RISKGATE_TEST_UNSET is "
         "not set; export it or write the value in the file"),
        ("secret: [a, b]\n", "1:9: secret must be a single value, not a list or mapping"),
        ("- just\n- a list\n", "1:1: the configuration must be a mapping of key: value"),
        ("secret: 'x\n", "2:1: not valid YAML: found unexpected end of stream"),
    ],
)
def test_a_bad_config_names_the_line_and_the_fix(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    assert f"{path}:{expected}" in problems(path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "upstrem: x\nstore: nope://\nmax_body_bytes: -1\n")
    assert len(problems(path)) == 4  # three bad keys and the missing secret


def test_environment_variables_are_read_and_typed(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RG_SECRET", SECRET)
    monkeypatch.setenv("RG_BODY", "1024")
    config = load_config(write(tmp_path, "secret: ${RG_SECRET}\nmax_body_bytes: ${RG_BODY}\n"))
    assert (config.secret, config.max_body_bytes) == (SECRET, 1024)


def test_a_missing_file_is_an_error_not_a_traceback(tmp_path: Path) -> None:
    assert problems(tmp_path / "absent.yaml") == [
        f"{tmp_path / 'absent.yaml'}: cannot read the configuration file: No such file or directory"
    ]
