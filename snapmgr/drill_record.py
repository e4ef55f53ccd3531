"""A drill's result record: what it proved, stored beside the snapshot.

Kept apart from :mod:`snapmgr.drill` so that ``list``, ``show`` and
``check`` read drill results without loading the restore machinery.
The record (``<id>.drill.json``) is written whole with one ``put_bytes``;
it never changes the snapshot's commit point and is deleted with it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

from snapmgr.catalog import Entry, Store
from snapmgr.errors import NotFoundError, SnapmgrError
from snapmgr.manifest import drill_name

log = logging.getLogger("snapmgr")


@dataclass(frozen=True)
class DrillRecord:
    """One drill's outcome, as stored beside the snapshot and shown by list/show/check."""

    id: str
    at: datetime
    ok: bool
    restore_s: float
    duration_s: float
    tables: int
    rows: int
    large_objects: int
    content_checked: bool
    target: str
    differences: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> bytes:
        data = asdict(self)
        data["at"] = self.at.astimezone(UTC).isoformat().replace("+00:00", "Z")
        return (json.dumps(data, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes) -> DrillRecord:
        data = json.loads(raw)
        data["at"] = datetime.fromisoformat(str(data["at"]).replace("Z", "+00:00"))
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def save_record(record: DrillRecord, stores: tuple[Store, ...]) -> None:
    """Store the record beside the snapshot in every store holding it (warn on failure)."""
    payload = record.to_json()
    for store in stores:
        try:
            store.backend.put_bytes(drill_name(record.id), payload, overwrite=True)
        except SnapmgrError as exc:
            log.warning("cannot store the drill result in %s: %s", store.describe(), exc)


def read_record(entry: Entry) -> DrillRecord | None:
    """The last drill of ``entry``, from the first store that has one."""
    for store in entry.stores:
        try:
            with store.backend.open_reader(entry.manifest.drill_name) as handle:
                return DrillRecord.from_json(handle.read())
        except NotFoundError:
            continue
        except (SnapmgrError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot read the drill result in %s: %s", store.describe(), exc)
    return None
