"""heap.settle: startup's survivors leave the collector's sight; later cycles are collected."""

from __future__ import annotations

import gc

from crm_runtime import heap


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


def test_settle_freezes_startup_and_later_cycles_are_still_collected() -> None:
    old = gc.get_threshold()
    try:
        before = gc.get_freeze_count()
        kept = [_Node() for _ in range(100)]  # "startup" objects
        heap.settle()
        assert gc.get_freeze_count() >= before + 100
        assert gc.get_count()[0] < 50  # the young generation starts empty
        gone = _Node()
        del gone
        assert gc.collect(0) >= 1  # the new cycle is found in the young generation
        assert len(kept) == 100
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)


def test_after_settle_the_collector_still_runs_on_its_own() -> None:
    import weakref

    old = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_threshold()[0] > old[0]  # the young generation is collected less often
        cycle = _Node()
        alive = weakref.ref(cycle)
        del cycle
        keep = [[i] for i in range(3 * gc.get_threshold()[0])]  # allocations, no collect()
        assert alive() is None  # an automatic collection found the cycle
        assert len(keep) == 3 * gc.get_threshold()[0]
    finally:
        gc.unfreeze()
        gc.set_threshold(*old)
