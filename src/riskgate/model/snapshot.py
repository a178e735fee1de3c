"""Model snapshots: written atomically, signed, one file per worker slot.

River models are plain Python objects, saved with :mod:`pickle` as River's own docs
do. Unpickling runs code named in the file, so a file is unpickled only after its
HMAC-SHA256 under a key derived from the configured ``secret`` checks out: a file
someone planted, or one written under another secret, is refused unread.

File layout: ``riskgate-model\\n``, then ``FORMAT LENGTH\\n``, then 32 bytes of HMAC
over that line and the payload, then the payload (the pickled state). Anything that
is not such a file — another format, too short, a bad signature, a River version that
cannot be trusted to read it — gives a warning and a fresh model, never a crash.

Workers: each worker of ``riskgate serve --workers N`` learns on its own and owns one
slot, ``SNAPSHOT.0``, ``SNAPSHOT.1`` ..., held with an exclusive ``flock`` on
``SNAPSHOT.N.lock`` for the life of the process, so no two workers ever write one file.
A worker restores its slot's file, or, when its slot has none (more workers than
before), the newest other slot's.

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "model.snapshot"
>>> slot = Snapshots(path, b"a-secret-of-16-chars")
>>> slot.path.name
'model.snapshot.0'
>>> slot.save({"anything": 1})
>>> slot.load()
({'anything': 1}, None)
>>> slot.release()
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import os
import pickle
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any, Final

MAGIC: Final = b"riskgate-model\n"
#: Bumped when what a snapshot holds changes shape; other formats are refused.
FORMAT: Final = 1
_MAC_SIZE: Final = 32
RIVER_VERSION: Final = version("river")


def snapshot_key(secret: bytes) -> bytes:
    """The signing key: derived, so the secret itself signs nothing but pass cookies."""
    return hmac.new(secret, b"riskgate model snapshot", hashlib.sha256).digest()


def encode(state: Any, key: bytes) -> bytes:
    payload = pickle.dumps({"river": RIVER_VERSION, "state": state},
                           protocol=pickle.HIGHEST_PROTOCOL)
    header = b"%d %d\n" % (FORMAT, len(payload))
    return MAGIC + header + hmac.new(key, header + payload, hashlib.sha256).digest() + payload


class SnapshotError(Exception):
    """A snapshot that cannot be used; the message says why, for a warning."""


def decode(data: bytes, key: bytes) -> Any:
    """The state a snapshot holds; :class:`SnapshotError` when it cannot be trusted."""
    if not data.startswith(MAGIC):
        raise SnapshotError("not a riskgate model snapshot")
    header, newline, rest = data[len(MAGIC):].partition(b"\n")
    try:
        version, length = (int(part) for part in header.split(b" "))
    except ValueError:
        raise SnapshotError("its header is damaged") from None
    if version != FORMAT:
        raise SnapshotError(f"it is in snapshot format {version}; this riskgate reads "
                            f"format {FORMAT}")
    mac, payload = rest[:_MAC_SIZE], rest[_MAC_SIZE:]
    if len(payload) < length:
        raise SnapshotError(f"it is truncated ({len(payload)} of {length} bytes)")
    expected = hmac.new(key, header + newline + payload, hashlib.sha256).digest()
    if len(payload) > length or not hmac.compare_digest(mac, expected):
        raise SnapshotError("its signature does not match: it was damaged, or written "
                            "under another secret")
    saved = pickle.loads(payload)  # noqa: S301 - signed by us, checked just above
    if saved.get("river") != RIVER_VERSION:
        # River makes no promise that its objects unpickle across versions.
        raise SnapshotError(f"it was written with River {saved.get('river')}; this is "
                            f"River {RIVER_VERSION}")
    return saved["state"]


def _claim(base: Path) -> tuple[int, IO[bytes]]:
    slot = 0
    while True:
        lock = (base.parent / f"{base.name}.{slot}.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            slot += 1
            continue
        return slot, lock


def slot_files(base: Path) -> list[Path]:
    """The snapshot files of ``base``'s slots, lowest slot first."""
    found = [(int(p.name.rsplit(".", 1)[1]), p) for p in base.parent.glob(f"{base.name}.*")
             if p.name.rsplit(".", 1)[1].isdigit()]
    return [p for _, p in sorted(found)]


@dataclass
class Snapshots:
    """One worker's slot of a snapshot path: claimed on creation, held until released."""

    base: Path
    secret: bytes

    def __post_init__(self) -> None:
        self.base.parent.mkdir(parents=True, exist_ok=True)
        self._key = snapshot_key(self.secret)
        self.slot, self._lock = _claim(self.base)
        self.path = self.base.parent / f"{self.base.name}.{self.slot}"

    def save(self, state: Any) -> None:
        """Write ``state`` now (:meth:`encode` then :meth:`write`)."""
        self.write(self.encode(state))

    def encode(self, state: Any) -> bytes:
        return encode(state, self._key)

    def write(self, data: bytes) -> None:
        """Write to a temporary file, flushed to disk, then rename it over the slot's
        file, so a crash mid-write leaves the previous snapshot whole."""
        temporary = self.path.with_name(f"{self.path.name}.tmp")
        with temporary.open("wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.path)

    def load(self) -> tuple[Any, str | None]:
        """The state to start from and, when a file could not be used, why (a warning).

        (None, None): there is nothing to restore.
        """
        source = self.path
        if not source.exists():
            others = [p for p in slot_files(self.base) if p != self.path]
            if not others:
                return None, None
            source = max(others, key=lambda p: p.stat().st_mtime)
        return read(source, self.secret)

    def release(self) -> None:
        with contextlib.suppress(OSError):
            self._lock.close()


def read(path: Path, secret: bytes) -> tuple[Any, str | None]:
    """The state in the snapshot ``path``, or None and why it cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, f"model snapshot {path} cannot be read ({exc.strerror}); starting fresh"
    try:
        return decode(data, snapshot_key(secret)), None
    except SnapshotError as exc:
        return None, f"model snapshot {path} is not used: {exc}; starting fresh"
    except Exception as exc:  # a signed file River cannot rebuild: still never a crash
        return None, (f"model snapshot {path} is not used: it could not be read back "
                      f"({type(exc).__name__}); starting fresh")
