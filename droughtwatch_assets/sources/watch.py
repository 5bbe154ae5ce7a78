"""Watching a raw source between looks: which shards are new, changed, removed, or still being written.

A watch keeps, as JSON, the shards the last requested run saw and the ones the last look saw differently:

    {"shards": {name: stamp, ...},    the shards the last requested run (or the first look) saw
     "pending": {name: stamp, ...}}   shards seen on the last look that differ from "shards"

A shard counts once two looks in a row see the same stamp (size + mtime, or size + ETag), so one still
being written waits until it is stable. Nothing here reads a shard or knows about Dagster.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from droughtwatch_assets.sources.raw import ShardStamp

TAG_LIMIT = 1000  # characters a run tag may hold


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def names_line(names: list[str], limit: int = 3) -> str:
    """'train/part-r-00120, train/part-r-00121, val/part-r-00007 … (+2 more)'."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} … (+{len(names) - limit} more)"


def names_tag(names: list[str]) -> str:
    """Comma-separated names, cut at TAG_LIMIT characters with how many more there are."""
    value = ""
    for index, name in enumerate(names):
        candidate = f"{value},{name}" if value else name
        left = len(names) - index - 1  # names after this one
        if len(candidate) + (len(f",… (+{left} more)") if left else 0) > TAG_LIMIT:
            return (f"{value}," if value else "") + f"… (+{len(names) - index} more)"
        value = candidate
    return value


def _stamps(value: dict) -> dict[str, ShardStamp]:
    return {name: ShardStamp.from_json(stamp) for name, stamp in value.items()}


def cursor_json(shards: dict[str, ShardStamp], pending: dict[str, ShardStamp]) -> str:
    return json.dumps(
        {
            "shards": {name: stamp.to_json() for name, stamp in sorted(shards.items())},
            "pending": {name: stamp.to_json() for name, stamp in sorted(pending.items())},
        },
        sort_keys=True,
    )


@dataclass(frozen=True)
class Look:
    """What one look at the source found, against the watch's cursor."""

    previous_cursor: str
    shards: dict[str, ShardStamp]  # the new baseline: what was known and is still there, plus the stable shards
    stable: dict[str, ShardStamp]  # new or changed, and the same on two looks in a row
    settling: dict[str, ShardStamp]  # first seen, or still changing
    added: list[str]
    changed: list[str]
    removed: list[str]

    @property
    def cursor(self) -> str:
        return cursor_json(self.shards, self.settling)

    @property
    def changes(self) -> list[str]:
        return sorted(self.stable)

    @property
    def settling_line(self) -> str:
        if not self.settling:
            return ""
        return (
            f"{plural(len(self.settling), 'shard')} still being written or just arrived: "
            f"{names_line(sorted(self.settling))} (picked up once unchanged on the next tick)"
        )

    def skip_reason(self) -> str | None:
        """Why no run follows this look, or None when one does."""
        if self.stable or self.removed:
            return None
        if not self.previous_cursor:
            return (
                f"first tick: raw_tfrecords was never materialised on this instance, so all "
                f"{plural(len(self.settling), 'shard')} count as new; a run follows once they are unchanged on the "
                f"next tick"
            )
        if self.settling:
            return f"no change yet: {plural(len(self.shards), 'shard')} watched; {self.settling_line}"
        return f"no change: {plural(len(self.shards), 'shard')} watched"

    def summary(self) -> str:
        parts = []
        for names, word in (
            (self.added, "new shard"),
            (self.changed, "changed shard"),
            (self.removed, "removed shard"),
        ):
            if names:
                parts.append(f"{plural(len(names), word)}: {names_line(names)}")
        return "; ".join(parts)

    def digest(self) -> str:
        """The same look at the same cursor gives the same digest: a run key that is never launched twice."""
        changes = [[name, self.stable[name].to_json()] for name in self.changes]
        return hashlib.sha256(json.dumps([self.previous_cursor, changes, self.removed]).encode()).hexdigest()[:16]


def look(listing: dict[str, ShardStamp], cursor: str | None) -> Look:
    """Compare a listing with the watch's cursor (None or empty: nothing known yet, every shard is new)."""
    state = json.loads(cursor) if cursor else {"shards": {}, "pending": {}}
    known, pending = _stamps(state["shards"]), _stamps(state["pending"])
    stable, settling = {}, {}
    for name, stamp in listing.items():
        if known.get(name) == stamp:
            continue
        if pending.get(name) == stamp:
            stable[name] = stamp
        else:
            settling[name] = stamp
    shards = {name: stamp for name, stamp in known.items() if name in listing}
    shards.update(stable)
    return Look(
        previous_cursor=cursor or "",
        shards=shards,
        stable=stable,
        settling=settling,
        added=[name for name in stable if name not in known],
        changed=[name for name in stable if name in known],
        removed=sorted(name for name in known if name not in listing),
    )
