"""IP intelligence: MaxMind databases and datacenter lists to ``ip.*`` facts.

Each MaxMind database is optional. Readers are opened with ``MODE_AUTO`` (the C
extension, memory-mapped: ~1 µs per lookup). A database that cannot be opened at
start-up is recorded in :attr:`GeoIP.startup_errors` for the caller to log as a
warning, and its facts are None ("unknown"). A lookup that hits corrupt data gives
None and counts an error; a request never sees an exception from here.

Replaced files (MaxMind ships weekly) are picked up on the lookup path: at most once
every ``check_interval`` seconds a lookup stats the file and reopens it when its
inode, size or mtime changed. That costs one clock read per lookup and one ``stat``
per interval, needs no background task, and works the same in every worker process
and in ``riskgate replay``; :meth:`GeoIP.refresh` forces the check. Replace files by
renaming a complete new file over the old one, as ``geoipupdate`` does: the open
reader maps the old file, and rewriting it in place would change data under it.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import maxminddb
from maxminddb.errors import InvalidDatabaseError

from riskgate.errors import SignalSourceError
from riskgate.event.types import IPAddress

log = logging.getLogger(__name__)

DatabaseKind = Literal["city", "asn", "anonymous_ip", "isp", "connection_type"]
KINDS: Final[tuple[DatabaseKind, ...]] = (
    "city", "asn", "anonymous_ip", "isp", "connection_type",
)
# Words one of which a database's metadata `database_type` must contain for its kind.
_TYPES: Final[dict[DatabaseKind, tuple[str, ...]]] = {
    "city": ("City", "Country", "Enterprise"),
    "asn": ("ASN", "ISP"),
    "anonymous_ip": ("Anonymous",),
    "isp": ("ISP",),
    "connection_type": ("Connection-Type",),
}

#: Hosting ASNs from X4BNet/lists_vpn (MIT), shipped so ``ip.datacenter`` works with an
#: ASN database and no list of one's own; provenance in the file's header.
DEFAULT_DATACENTER_ASNS: Final = Path(__file__).parent / "data" / "datacenter_asns.txt"
#: Facts produced here, all None when no database could answer.
GEO_FACTS: Final[tuple[str, ...]] = (
    "ip.network", "ip.country", "ip.registered_country", "ip.city", "ip.lat", "ip.lon",
    "ip.asn", "ip.asn_org", "ip.isp", "ip.is_anonymous", "ip.is_vpn", "ip.is_proxy",
    "ip.is_tor", "ip.is_hosting", "ip.is_residential_proxy", "ip.connection_type",
)
_ANONYMOUS_FLAGS: Final[tuple[tuple[str, str], ...]] = (
    ("ip.is_anonymous", "is_anonymous"),
    ("ip.is_vpn", "is_anonymous_vpn"),
    ("ip.is_proxy", "is_public_proxy"),
    ("ip.is_tor", "is_tor_exit_node"),
    ("ip.is_hosting", "is_hosting_provider"),
    ("ip.is_residential_proxy", "is_residential_proxy"),
)

Record = dict[str, Any]


def open_database(kind: DatabaseKind, path: str | Path) -> Any:
    """Open one MaxMind database for ``kind``, or raise :class:`SignalSourceError`.

    >>> open_database("city", "/no/City.mmdb")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    riskgate.errors.SignalSourceError: geoip.city: /no/City.mmdb: file not found; ...
    """
    where = f"geoip.{kind}: {path}"
    expected = "expected a MaxMind DB (.mmdb) file"
    try:
        reader = maxminddb.open_database(str(path), maxminddb.MODE_AUTO)
    except FileNotFoundError:
        raise SignalSourceError(f"{where}: file not found; {expected}") from None
    except PermissionError:
        raise SignalSourceError(f"{where}: permission denied; {expected}") from None
    except (InvalidDatabaseError, ValueError, OSError) as exc:
        raise SignalSourceError(
            f"{where}: not a valid MaxMind database, its metadata or search tree is "
            f"corrupt ({exc}); {expected}, e.g. a fresh download"
        ) from None
    db_type = reader.metadata().database_type
    if not any(word in db_type for word in _TYPES[kind]):
        reader.close()
        wanted = " or ".join(_TYPES[kind])
        raise SignalSourceError(
            f"{where}: holds a {db_type} database; geoip.{kind} expects a {wanted} database"
        )
    return reader


def _stat_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class _Database:
    """One configured database file: its reader, and when to look for a new file."""

    def __init__(self, kind: DatabaseKind, path: Path, interval: float, now: float) -> None:
        self.kind = kind
        self.path = path
        self.interval = interval
        self.reader: Any = None
        self.key: tuple[int, int, int] | None = None
        self.next_check = now + interval
        self.errors = 0

    def open(self) -> None:
        key = _stat_key(self.path)
        # A reader is not closed when replaced: a lookup in another thread may still
        # hold it, and the mmap is released when the last reference goes.
        self.reader = open_database(self.kind, self.path)
        self.key = key

    def maybe_reload(self, now: float) -> bool:
        """Reopen the file if it changed; True when a new reader is in place."""
        self.next_check = now + self.interval
        key = _stat_key(self.path)
        if key is None or key == self.key:
            return False
        try:
            self.open()
        except SignalSourceError as exc:
            # A half-copied file fails to open: keep the old reader, and try again
            # once the file changes again (the copy finishes).
            self.key = key
            self.errors += 1
            log.warning("%s; keeping the previously loaded database", exc)
            return False
        log.info("geoip.%s: reloaded %s", self.kind, self.path)
        return True

    def lookup(self, ip: IPAddress) -> tuple[Record | None, int] | None:
        """(record, prefix length), or None when this database could not answer."""
        if self.reader is None:
            return None
        try:
            record, prefix = self.reader.get_with_prefix_len(ip)
        except InvalidDatabaseError:
            self.errors += 1
            return None
        except ValueError:  # an IPv6 address in an IPv4-only database
            return None
        return record, prefix


class GeoIP:
    """The configured MaxMind databases, each optional, reloaded when replaced.

    >>> g = GeoIP(city="/nonexistent/City.mmdb")
    >>> [str(e).split(":")[0] for e in g.startup_errors]
    ['geoip.city']
    >>> g.facts(ipaddress.ip_address("81.2.69.142"))["ip.country"] is None
    True
    """

    def __init__(
        self,
        city: str | Path | None = None,
        asn: str | Path | None = None,
        anonymous_ip: str | Path | None = None,
        isp: str | Path | None = None,
        connection_type: str | Path | None = None,
        *,
        check_interval: float = 5.0,
        cache_size: int = 8192,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        # A City record decodes in ~20 µs (every name in eight languages); clients
        # repeat, so the derived facts are cached per address until a reload.
        self._cached = functools.lru_cache(maxsize=cache_size)(self._lookup_all)
        paths: dict[DatabaseKind, str | Path | None] = {
            "city": city, "asn": asn, "anonymous_ip": anonymous_ip, "isp": isp,
            "connection_type": connection_type,
        }
        now = clock()
        self._dbs: dict[DatabaseKind, _Database] = {}
        errors: list[SignalSourceError] = []
        for kind, path in paths.items():
            if path is None:
                continue
            db = _Database(kind, Path(path), check_interval, now)
            try:
                db.open()
            except SignalSourceError as exc:
                errors.append(exc)
            self._dbs[kind] = db
        self._next_check = min((db.next_check for db in self._dbs.values()), default=0.0)
        #: Problems found opening the databases; their facts stay None until fixed.
        self.startup_errors: tuple[SignalSourceError, ...] = tuple(errors)

    @property
    def lookup_errors(self) -> int:
        """Lookups and reloads that failed on corrupt data since start-up."""
        return sum(db.errors for db in self._dbs.values())

    @property
    def all_loaded(self) -> bool:
        """Every configured database is open and answering."""
        return all(db.reader is not None for db in self._dbs.values())

    def loaded(self, kind: DatabaseKind) -> bool:
        """Whether a database of ``kind`` is open and answering."""
        db = self._dbs.get(kind)
        return db is not None and db.reader is not None

    def refresh(self) -> None:
        """Check every database file now and reopen those that were replaced."""
        now = self._clock()
        for db in self._dbs.values():
            if db.maybe_reload(now):
                self._cached.cache_clear()
        self._next_check = min((db.next_check for db in self._dbs.values()), default=0.0)

    def lookup(self, kind: DatabaseKind, ip: IPAddress) -> tuple[Record | None, int] | None:
        """The raw record and prefix length from one database, None if it cannot answer."""
        db = self._dbs.get(kind)
        return db.lookup(ip) if db is not None else None

    def facts(self, ip: IPAddress) -> dict[str, Any]:
        """All ``ip.*`` MaxMind facts for one address (see :data:`GEO_FACTS`)."""
        if self._dbs and self._clock() >= self._next_check:
            self.refresh()
        return dict(self._cached(ip))

    def _lookup_all(self, ip: IPAddress) -> dict[str, Any]:
        facts: dict[str, Any] = dict.fromkeys(GEO_FACTS)
        network: str | None = None
        city = self.lookup("city", ip)
        if city is not None:
            record, prefix = city
            if record:
                network = _network(ip, prefix)
                facts["ip.country"] = _get(record, "country", "iso_code")
                facts["ip.registered_country"] = _get(record, "registered_country", "iso_code")
                facts["ip.city"] = _get(record, "city", "names", "en")
                facts["ip.lat"] = _get(record, "location", "latitude")
                facts["ip.lon"] = _get(record, "location", "longitude")
        for kind in ("asn", "isp"):
            found = self.lookup(kind, ip)
            if found is None:
                continue
            record, prefix = found
            if record:
                network = network or _network(ip, prefix)
            if record and facts["ip.asn"] is None:
                facts["ip.asn"] = record.get("autonomous_system_number")
                facts["ip.asn_org"] = record.get("autonomous_system_organization")
            if record and kind == "isp":
                facts["ip.isp"] = record.get("isp")
        anonymous = self.lookup("anonymous_ip", ip)
        if anonymous is not None:
            record, prefix = anonymous
            if record:
                network = network or _network(ip, prefix)
            for fact, field in _ANONYMOUS_FLAGS:
                facts[fact] = bool(record and record.get(field))
        connection = self.lookup("connection_type", ip)
        if connection is not None:
            record, prefix = connection
            if record:
                network = network or _network(ip, prefix)
                facts["ip.connection_type"] = record.get("connection_type")
        facts["ip.network"] = network
        return facts


def _get(record: Record, *path: str) -> Any:
    value: Any = record
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def _network(ip: IPAddress, prefix: int) -> str:
    return str(ipaddress.ip_network((ip, prefix), strict=False))


class NetworkSet:
    """Fast membership of an address in a large set of CIDR networks.

    The networks are merged into sorted, disjoint integer ranges per IP version,
    so a lookup is one binary search (~1 µs for 50,000 networks).

    >>> s = NetworkSet(["192.0.2.0/24", "198.51.100.0/25", "2001:db8::/32"])
    >>> [ipaddress.ip_address(a) in s for a in ("192.0.2.9", "198.51.100.200", "2001:db8::1")]
    [True, False, True]
    """

    def __init__(self, networks: Iterable[str]) -> None:
        v4: list[ipaddress.IPv4Network] = []
        v6: list[ipaddress.IPv6Network] = []
        for text in networks:
            net = ipaddress.ip_network(text.strip(), strict=False)
            (v4 if net.version == 4 else v6).append(net)  # type: ignore[arg-type]
        self._starts: dict[int, list[int]] = {}
        self._ends: dict[int, list[int]] = {}
        merged_by_version: dict[int, Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]] = {
            4: ipaddress.collapse_addresses(v4), 6: ipaddress.collapse_addresses(v6),
        }
        for version, merged in merged_by_version.items():
            ranges = [(int(n.network_address), int(n.broadcast_address)) for n in merged]
            self._starts[version] = [start for start, _ in ranges]
            self._ends[version] = [end for _, end in ranges]

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        value = int(ip)
        i = bisect.bisect_right(self._starts[ip.version], value) - 1
        return i >= 0 and value <= self._ends[ip.version][i]

    def __len__(self) -> int:
        return sum(len(s) for s in self._starts.values())


def _list_lines(path: str | Path, what: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SignalSourceError(f"{path}: cannot read the {what}: {exc}") from None
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


@dataclass(frozen=True, slots=True)
class DatacenterLists:
    """Hosting ASNs and CIDR ranges, e.g. X4BNet's ``lists_vpn`` datacenter lists."""

    asns: frozenset[int]
    networks: NetworkSet

    @classmethod
    def from_files(
        cls, asn_files: Iterable[str | Path] = (), cidr_files: Iterable[str | Path] = ()
    ) -> DatacenterLists:
        """Read ``AS<number> # comment`` files and one-CIDR-per-line files."""
        asns: set[int] = set()
        for path in asn_files:
            for line in _list_lines(path, "datacenter ASN list"):
                number = line.upper().removeprefix("AS")
                if not number.isdigit():
                    raise SignalSourceError(
                        f"{path}: {line!r} is not an AS number; expected lines like 'AS13335'"
                    )
                asns.add(int(number))
        cidrs: list[str] = []
        for path in cidr_files:
            cidrs.extend(_list_lines(path, "datacenter CIDR list"))
        try:
            networks = NetworkSet(cidrs)
        except ValueError as exc:
            raise SignalSourceError(
                f"datacenter CIDR list: {exc}; expected one CIDR per line"
            ) from None
        return cls(frozenset(asns), networks)

    def __call__(self, ip: IPAddress, asn: int | None) -> bool | None:
        """Listed or not; None when neither list can judge (no networks, no ASN known)."""
        if ip in self.networks or (asn is not None and asn in self.asns):
            return True
        return None if asn is None and not len(self.networks) else False


def datacenter(
    ip: IPAddress, geo: dict[str, Any], lists: DatacenterLists | None
) -> bool | None:
    """``ip.datacenter``: the hosting flag, or membership in the datacenter lists.

    None only when neither an Anonymous-IP answer nor any list is available.
    """
    hosting = geo.get("ip.is_hosting")
    listed = lists(ip, geo.get("ip.asn")) if lists is not None else None
    if hosting or listed:
        return True
    if hosting is None and listed is None:
        return None
    return False

