"""L1 (labcache.memory): least-recently-used, an expiry per entry, bounded by count or bytes."""

from __future__ import annotations

import pytest

from labcache.memory import L1Entry, Memory


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_least_recently_used_entry_goes_first_not_the_oldest() -> None:
    clock = Clock()
    l1 = Memory(3, clock=clock)
    for key in ("a", "b", "c"):
        l1.put(key, key.upper(), 60)
    assert l1["a"].value == "A"  # a read makes "a" the most recently used
    l1.put("d", "D", 60)
    assert sorted(l1) == ["a", "c", "d"]  # "b" was the least recently used (FIFO drops "a")
    assert l1.currsize == len(l1) == 3


def test_an_expired_entry_is_never_served_and_is_dropped_when_read() -> None:
    clock = Clock()
    l1 = Memory(10, clock=clock)
    l1.put("k", "v", 5)
    clock.now += 4.999
    assert l1["k"].value == "v" and "k" in l1
    clock.now += 0.001
    assert "k" not in l1 and l1.get("k") is None and l1.value("k", "none") == "none"
    with pytest.raises(KeyError):
        l1["k"]
    assert len(l1) == 0 and l1.currsize == 0


def test_expired_entries_make_room_before_any_live_one_is_evicted() -> None:
    clock = Clock()
    l1 = Memory(3, clock=clock)
    l1.put("short", 1, 1)
    l1.put("long-1", 2, 60)
    l1.put("long-2", 3, 60)
    l1["long-1"], l1["long-2"]
    clock.now += 2  # "short" expired but is still held
    l1.put("new", 4, 60)
    assert sorted(l1) == ["long-1", "long-2", "new"]
    l1["long-1"]
    l1.put("newer", 5, 60)  # nothing expired: the least recently used live entry goes
    assert sorted(l1) == ["long-1", "new", "newer"]


def test_a_byte_bound_counts_sizes_and_keeps_nothing_larger_than_itself() -> None:
    clock = Clock()
    l1 = Memory(maxbytes=100, clock=clock)
    l1.put("a", "x", 60, size=40)
    l1.put("b", "y", 60, size=40)
    assert l1.currsize == 80
    l1.put("c", "z", 60, size=40)  # over 100: "a" goes
    assert sorted(l1) == ["b", "c"] and l1.currsize == 80
    l1.put("huge", "w", 60, size=101)  # served by the caller, never kept
    assert "huge" not in l1 and sorted(l1) == ["b", "c"]
    l1.put("b", "y2", 60, size=10)  # replacing an entry replaces its size
    assert l1.currsize == 50 and l1["b"].value == "y2"


def test_replacing_keys_many_times_keeps_the_expiry_heap_small() -> None:
    clock = Clock()
    l1 = Memory(5, clock=clock)
    for i in range(10_000):
        l1.put(f"k{i % 5}", i, 60)
    assert len(l1) == 5 and len(l1._expiries) <= 2 * 5 + 64
    clock.now += 61
    l1.put("fresh", 1, 60)
    assert list(l1) == ["fresh"]


def test_evict_matching_and_mapping_use() -> None:
    clock = Clock()
    l1 = Memory(10, clock=clock)
    for key in ("ns:policy:1", "ns:policy:2", "ns:customer:1"):
        l1.put(key, key, 60)
    assert sorted(l1.matching("ns:policy:*")) == ["ns:policy:1", "ns:policy:2"]
    assert l1.evict(["ns:policy:1", "ns:absent"]) == ["ns:policy:1"]
    l1["ns:x"] = L1Entry("x", clock() + 60, 0)
    assert dict(l1.items())["ns:x"].value == "x"
    del l1["ns:x"]
    assert sorted(l1) == ["ns:customer:1", "ns:policy:2"]
    l1.put("zero", 0, 0)  # a TTL of 0 keeps nothing
    assert "zero" not in l1
    l1.clear()
    assert len(l1) == 0 and l1.currsize == 0


@pytest.mark.parametrize(("option", "value"), [("maxsize", 0), ("maxbytes", -1), ("ttl", 0)])
def test_bad_bounds_are_value_errors(option: str, value: int) -> None:
    with pytest.raises(ValueError, match=option.replace("maxsize", "l1 maxsize")):
        Memory(**{option: value})  # type: ignore[arg-type]
