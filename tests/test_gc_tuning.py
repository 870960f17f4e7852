"""The serving process's collector settings (collab.gc_tuning)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from collab.gc_tuning import YOUNG_THRESHOLD, settle_after_startup


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_startup_objects_leave_the_collector_and_young_collections_are_rarer(
    restored_gc: None,
) -> None:
    built_at_startup = [object() for _ in range(10)]
    _, middle, oldest = gc.get_threshold()
    settle_after_startup()
    assert gc.get_freeze_count() > len(built_at_startup)
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, oldest)
    # A cycle made after startup is still collected.
    cycle: list[object] = []
    cycle.append(cycle)
    del cycle
    assert gc.collect() >= 1
