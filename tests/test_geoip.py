"""MaxMind facts, checked against MaxMind's own test databases and expected answers."""

from __future__ import annotations

import ipaddress
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from riskgate.errors import SignalSourceError
from riskgate.signals.extractor import SignalExtractor
from riskgate.signals.geoip import DatacenterLists, GeoIP, NetworkSet, datacenter, open_database
from riskgate.signals.keys import Keyer
from support import SHARED_DATA

DATA = SHARED_DATA
MMDB = DATA / "maxmind" / "test-data"
EXPECTED = json.loads((DATA / "maxmind" / "expected_lookups.json").read_text())["databases"]
DC = DATA / "iplists" / "x4bnet-lists_vpn" / "datacenter"


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


def _cases(db: str) -> list[Any]:
    return [
        pytest.param(case, id=f"{db}:{case['ip']}")
        for case in EXPECTED[db]["lookups"] + EXPECTED[db]["ipv4_lookups"]
    ]


@pytest.fixture(scope="module")
def geo() -> GeoIP:
    g = GeoIP(
        city=MMDB / "GeoIP2-City-Test.mmdb",
        asn=MMDB / "GeoLite2-ASN-Test.mmdb",
        anonymous_ip=MMDB / "GeoIP2-Anonymous-IP-Test.mmdb",
        isp=MMDB / "GeoIP2-ISP-Test.mmdb",
        connection_type=MMDB / "GeoIP2-Connection-Type-Test.mmdb",
    )
    assert g.startup_errors == ()
    return g


@pytest.mark.parametrize("case", _cases("GeoIP2-City-Test.mmdb"))
def test_city_facts_match_maxmind_expected_answers(geo: GeoIP, case: dict[str, Any]) -> None:
    facts = geo.facts(ip(case["ip"]))
    record = case["expected"]
    assert facts["ip.network"] == case["network"]
    assert facts["ip.country"] == record.get("country", {}).get("iso_code")
    assert facts["ip.registered_country"] == record.get("registered_country", {}).get("iso_code")
    assert facts["ip.city"] == record.get("city", {}).get("names", {}).get("en")
    assert facts["ip.lat"] == record.get("location", {}).get("latitude")
    assert facts["ip.lon"] == record.get("location", {}).get("longitude")


@pytest.mark.parametrize("case", _cases("GeoLite2-ASN-Test.mmdb"))
def test_asn_facts_match_maxmind_expected_answers(case: dict[str, Any]) -> None:
    facts = GeoIP(asn=MMDB / "GeoLite2-ASN-Test.mmdb").facts(ip(case["ip"]))
    assert facts["ip.asn"] == case["expected"]["autonomous_system_number"]
    assert facts["ip.asn_org"] == case["expected"]["autonomous_system_organization"]
    assert facts["ip.network"] == case["network"]


@pytest.mark.parametrize("case", _cases("GeoIP2-Anonymous-IP-Test.mmdb"))
def test_anonymous_flags_match_and_absent_flags_are_false(case: dict[str, Any]) -> None:
    facts = GeoIP(anonymous_ip=MMDB / "GeoIP2-Anonymous-IP-Test.mmdb").facts(ip(case["ip"]))
    record = case["expected"]
    assert facts["ip.is_anonymous"] is bool(record.get("is_anonymous"))
    assert facts["ip.is_vpn"] is bool(record.get("is_anonymous_vpn"))
    assert facts["ip.is_proxy"] is bool(record.get("is_public_proxy"))
    assert facts["ip.is_tor"] is bool(record.get("is_tor_exit_node"))
    assert facts["ip.is_hosting"] is bool(record.get("is_hosting_provider"))
    assert facts["ip.is_residential_proxy"] is bool(record.get("is_residential_proxy"))


@pytest.mark.parametrize("case", _cases("GeoIP2-Connection-Type-Test.mmdb"))
def test_connection_type_matches(case: dict[str, Any]) -> None:
    g = GeoIP(connection_type=MMDB / "GeoIP2-Connection-Type-Test.mmdb")
    assert g.facts(ip(case["ip"]))["ip.connection_type"] == case["expected"]["connection_type"]


@pytest.mark.parametrize("case", _cases("GeoIP2-ISP-Test.mmdb"))
def test_isp_facts_match(case: dict[str, Any]) -> None:
    facts = GeoIP(isp=MMDB / "GeoIP2-ISP-Test.mmdb").facts(ip(case["ip"]))
    assert facts["ip.isp"] == case["expected"].get("isp")
    assert facts["ip.asn"] == case["expected"].get("autonomous_system_number")


def test_readme_examples_tor_vpn_and_residential_proxy(geo: GeoIP) -> None:
    assert geo.facts(ip("65.0.0.1"))["ip.is_tor"] is True
    assert geo.facts(ip("1.2.0.1"))["ip.is_vpn"] is True
    assert geo.facts(ip("6.1.0.4"))["ip.is_residential_proxy"] is True


def test_address_missing_from_databases_has_no_location_and_false_flags(geo: GeoIP) -> None:
    facts = geo.facts(ip("10.0.0.1"))
    assert facts["ip.country"] is None and facts["ip.network"] is None
    assert facts["ip.is_anonymous"] is False and facts["ip.is_tor"] is False


def test_without_databases_every_fact_is_unknown() -> None:
    facts = GeoIP().facts(ip("81.2.69.142"))
    assert set(facts.values()) == {None}


@pytest.mark.parametrize(
    ("kind", "path", "message"),
    [
        ("city", MMDB / "GeoIP2-City-Test-Invalid-Node-Count.mmdb",
         r"geoip\.city: .*GeoIP2-City-Test-Invalid-Node-Count\.mmdb: not a valid MaxMind "
         r"database, its metadata or search tree is corrupt"),
        ("city", MMDB / "absent.mmdb", r"geoip\.city: .*absent\.mmdb: file not found"),
        ("asn", MMDB / "GeoIP2-City-Test.mmdb",
         r"geoip\.asn: .*holds a GeoIP2-City database; geoip\.asn expects a ASN or ISP"),
        ("city", DC / "ASN.txt", r"geoip\.city: .*ASN\.txt: not a valid MaxMind database"),
    ],
)
def test_unusable_database_gives_clear_startup_error(kind: Any, path: Path, message: str) -> None:
    with pytest.raises(SignalSourceError, match=message):
        open_database(kind, path)
    g = GeoIP(**{kind: path})
    assert len(g.startup_errors) == 1 and not g.loaded(kind)
    assert g.facts(ip("81.2.69.142"))["ip.country"] is None


def test_corrupt_record_gives_none_and_counts_error_instead_of_raising() -> None:
    g = GeoIP(city=MMDB / "GeoIP2-City-Test-Broken-Double-Format.mmdb")
    assert g.startup_errors == ()  # the damage is in the data section, found on lookup
    assert g.facts(ip("214.0.0.1"))["ip.country"] is None
    assert g.lookup_errors == 1


def test_replaced_database_is_reopened_without_restart(tmp_path: Path) -> None:
    now = [0.0]
    live = tmp_path / "geo.mmdb"
    shutil.copy(MMDB / "GeoIP2-Country-Test.mmdb", live)
    g = GeoIP(city=live, check_interval=5.0, clock=lambda: now[0])
    assert g.facts(ip("81.2.69.142"))["ip.city"] is None  # a Country database

    staged = tmp_path / "staged.mmdb"
    shutil.copy(MMDB / "GeoIP2-City-Test.mmdb", staged)
    staged.replace(live)  # an atomic rename, as geoipupdate does
    now[0] = 4.0
    assert g.facts(ip("81.2.69.142"))["ip.city"] is None, "the file is checked every 5 s"
    now[0] = 6.0
    assert g.facts(ip("81.2.69.142"))["ip.city"] == "London"


def test_broken_replacement_keeps_the_previous_database(tmp_path: Path) -> None:
    now = [0.0]
    live = tmp_path / "city.mmdb"
    shutil.copy(MMDB / "GeoIP2-City-Test.mmdb", live)
    g = GeoIP(city=live, clock=lambda: now[0])
    staged = tmp_path / "staged.mmdb"
    shutil.copy(MMDB / "GeoIP2-City-Test-Invalid-Node-Count.mmdb", staged)
    staged.replace(live)
    now[0] = 10.0
    assert g.facts(ip("81.2.69.142"))["ip.country"] == "GB"
    assert g.lookup_errors == 1


def test_datacenter_lists_flag_listed_networks_and_asns() -> None:
    lists = DatacenterLists.from_files([DC / "ASN.txt"], [DC / "ipv4.txt", DC / "ipv6.txt"])
    first_v4 = (DC / "ipv4.txt").read_text().split()[0]
    first_v6 = (DC / "ipv6.txt").read_text().split()[0]
    for cidr in (first_v4, first_v6):
        network = ipaddress.ip_network(cidr)
        assert lists(network.network_address, None)
        assert lists(network.broadcast_address, None)
    asn = int((DC / "ASN.txt").read_text().split()[0].removeprefix("AS"))
    assert lists(ip("192.0.2.1"), asn)
    assert not lists(ip("192.0.2.1"), None)


def test_datacenter_fact_combines_hosting_flag_and_lists() -> None:
    lists = DatacenterLists(frozenset({64512}), NetworkSet(["203.0.113.0/24"]))
    assert datacenter(ip("203.0.113.9"), {"ip.is_hosting": None}, lists) is True
    assert datacenter(ip("192.0.2.9"), {"ip.asn": 64512}, lists) is True
    assert datacenter(ip("192.0.2.9"), {"ip.is_hosting": True}, None) is True
    assert datacenter(ip("192.0.2.9"), {"ip.is_hosting": False}, None) is False
    assert datacenter(ip("192.0.2.9"), {"ip.is_hosting": None}, None) is None


def test_extractor_exposes_geo_facts(geo: GeoIP) -> None:
    from riskgate.event.types import RiskEvent

    facts = SignalExtractor(Keyer(b"k"), geoip=geo).facts(
        RiskEvent("r", "login", ip("81.2.69.142"), 0.0)
    )
    assert (facts["ip.country"], facts["ip.registered_country"]) == ("GB", "US")
    assert facts["ip.datacenter"] is facts["ip.is_hosting"]
