"""Write-through and write-behind on any `WriteSink`, by table and row id, on a real Redis.

`Notes` is a sink of the test's own (a dict, not the course's database): the patterns must work
with it through `update`, cache each row under the key its table's `keys` entry gives, and
refuse a table that has none before anything is written. The course's verbs and keys
(`labcache.lab.writes`) are checked against its `InsuranceDB` at the end.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest
import redis.asyncio as aioredis

from labcache.flusher import QueuedWrite
from labcache.lab.data import InsuranceDB, Latency
from labcache.lab.writes import InsuranceWriteBehind, InsuranceWriteThrough
from labcache.multilevel import MultiLevelCache
from labcache.writes import Row, WriteBehind, WriteSink, WriteThrough, merge_changes
from tests.helpers import command_counts, commands_sent

KEYS = {"notes": "note"}


class Notes:
    """One table, `notes`, in a dict: a version per row and a ledger of applied queued writes."""

    FIELDS = frozenset({"text", "meta"})

    def __init__(self) -> None:
        self.rows: dict[str, Row] = {
            "1": {"id": "1", "text": "first", "meta": {"lang": "en", "pinned": False}, "version": 1}
        }
        self.applied: dict[str, int] = {}  # row id -> newest queued version applied
        self.calls: Counter[str] = Counter()

    async def read(self, table: str, row_id: str | int, /) -> Row | None:
        self.calls["read"] += 1
        self.updatable(table)
        return copy.deepcopy(self.rows.get(str(row_id)))

    async def update(self, table: str, row_id: str | int, /, **changes: Any) -> Row:
        self.calls["update"] += 1
        self.validate_changes(table, changes)
        if str(row_id) not in self.rows:
            raise KeyError(f"no note {row_id!r}")
        self.rows[str(row_id)] = merge_changes(self.rows[str(row_id)], changes)
        return copy.deepcopy(self.rows[str(row_id)])

    def merge(self, table: str, current: Row, changes: Mapping[str, Any], /) -> Row:
        return merge_changes(current, changes)

    def updatable(self, table: str) -> frozenset[str]:
        if table != "notes":
            raise ValueError(f"cannot update {table!r}")
        return self.FIELDS

    def validate_changes(
        self, table: str, changes: Mapping[str, Any], *, check_references: bool = True
    ) -> dict[str, Any]:
        unknown = set(changes) - self.updatable(table)
        if unknown or not changes:
            raise ValueError(f"cannot update {sorted(unknown) or 'nothing'} on {table}")
        if not isinstance(changes.get("text", ""), str):
            raise ValueError("text must be str")
        return dict(changes)

    async def apply_writes(self, writes: Sequence[QueuedWrite]) -> list[str]:
        self.calls["apply_writes"] += 1
        outcomes = []
        for table, row_id, fields, version in writes:
            try:
                self.validate_changes(table, fields)
            except ValueError as exc:
                outcomes.append(f"invalid: {exc}")
                continue
            if self.applied.get(row_id, 0) >= version:
                outcomes.append("stale")
                continue
            self.rows[row_id] = merge_changes(self.rows[row_id], fields)
            self.applied[row_id] = version
            outcomes.append("applied")
        return outcomes


@pytest.fixture
def notes() -> Notes:
    sink = Notes()
    _: WriteSink = sink  # mypy checks that a sink of our own satisfies the protocol
    return sink


@pytest.fixture
def insurance() -> Iterator[InsuranceDB]:
    db = InsuranceDB(latency=Latency.zero())
    yield db
    db.close()


async def fail() -> object:
    raise AssertionError("the loader should not run")


async def test_write_through_caches_the_row_under_its_tables_key(
    cache: MultiLevelCache, notes: Notes, redis: aioredis.Redis
) -> None:
    wt = WriteThrough(cache, notes, keys=KEYS)
    row = await wt.update("notes", 1, text="second", meta={"pinned": True})
    expected = {"id": "1", "text": "second", "meta": {"lang": "en", "pinned": True}, "version": 2}
    assert row == expected == notes.rows["1"]  # committed, nested fields merged
    assert await redis.exists(cache.key("note:1")) == 1
    assert await cache.get("note:1", fail, skip_memory=True) == row  # Redis has the new row
    assert notes.calls == {"update": 1} and wt.stats.writes == 1


async def test_a_table_without_a_key_is_refused_before_anything_is_written(
    cache: MultiLevelCache, notes: Notes, redis: aioredis.Redis
) -> None:
    wt = WriteThrough(cache, notes)  # no keys= at all
    wb = WriteBehind(cache, notes, keys={"drafts": "draft"})  # another table's only
    before = await command_counts(redis)
    with pytest.raises(ValueError, match=r"no cache key for table 'notes'.*no table"):
        await wt.update("notes", 1, text="lost")
    with pytest.raises(ValueError, match=r"no cache key for table 'notes'.*\['drafts'\]"):
        await wb.update("notes", 1, text="lost")
    assert await commands_sent(redis, before) == {}  # not one command reached Redis
    assert notes.calls == {} and notes.rows["1"]["text"] == "first"
    with pytest.raises(ValueError, match=r"keys\['notes'\] must be a non-empty string"):
        WriteThrough(cache, notes, keys={"notes": ""})
    # `write` takes the key itself: it needs no mapping.
    row = await wt.write("note:1", lambda: notes.update("notes", 1, text="kept"))
    assert await cache.get("note:1", fail) == row and row["text"] == "kept"


async def test_write_behind_and_its_flusher_on_a_sink_of_our_own(
    cache: MultiLevelCache, notes: Notes
) -> None:
    wb = WriteBehind(cache, notes, keys=KEYS, interval=0.05)
    new = await wb.update("notes", "1", meta={"pinned": True})
    newer = await wb.update("notes", "1", text="third")
    assert newer == {"id": "1", "text": "third", "meta": {"lang": "en", "pinned": True},
                     "version": 3}  # fmt: skip
    assert new["version"] == 2 and notes.rows["1"]["version"] == 1  # the database: not yet
    assert await cache.get("note:1", fail, skip_memory=True) == newer
    assert notes.calls == {"read": 1}  # the second update merged onto the cached row
    with pytest.raises(ValueError, match="text must be str"):
        await wb.update("notes", "1", text=3)
    with pytest.raises(KeyError, match="no row with id '9' in notes"):
        await wb.update("notes", "9", text="nobody")
    async with wb:  # the background flusher
        await wb.flush()
    assert notes.rows["1"] == {**newer, "version": 3}  # the two writes, in order, applied once
    assert (wb.stats.applied, wb.stats.stale) == (2, 0) and (await wb.lag()).total == 0


# -- the course's verbs and keys, on its InsuranceDB -----------------------------------------


async def test_insurance_db_is_a_write_sink_with_the_course_keys(
    cache: MultiLevelCache, insurance: InsuranceDB
) -> None:
    sink: WriteSink = insurance  # mypy checks the protocol here too
    assert (await sink.read("customers", 60000) or {})["id"] == "60000"
    with pytest.raises(ValueError, match="cannot read 'claims'"):
        await sink.read("claims", 1)
    with pytest.raises(ValueError, match="cannot update 'agents'"):
        await sink.update("agents", "A001", name="X")
    wt = InsuranceWriteThrough(cache, insurance)
    row = await wt.update_customer("60000", name="Zed Example")
    assert await cache.get("customer:60000", fail) == row
    assert insurance.calls["update_customer"] == 1  # dispatched to the course's own method
    same = await wt.update("policies", "12345", premium=10.0)
    assert await cache.get("policy:12345", fail) == same


async def test_insurance_merge_drops_the_joined_holder_when_the_policy_changes_hands(
    cache: MultiLevelCache, insurance: InsuranceDB
) -> None:
    wb = InsuranceWriteBehind(cache, insurance)
    old = await insurance.get_policy("12345")
    assert old is not None and old["holder"]
    moved = await wb.update_policy("12345", customer_id="60001", coverage={"collision": 1})
    assert "holder" not in moved and moved["version"] == old["version"] + 1
    assert moved["coverage"] == {**old["coverage"], "collision": 1}
    kept = await wb.update_policy("12346", premium=5.0)
    assert kept["holder"]  # the same holder: the joined name stays
    assert await wb.flush() == 2
    reloaded = await insurance.get_policy("12345")
    customer = await insurance.get_customer("60001")
    assert reloaded is not None and customer is not None
    assert reloaded["holder"] == customer["name"] and reloaded["version"] == moved["version"]
