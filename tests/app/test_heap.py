"""app/heap.py: the heap alive at the start of a script run is left out of Streamlit's post-run
collection, which still frees what the run allocated; every FULL_EVERY-th run collects everything."""

from __future__ import annotations

import gc
import weakref

import pytest

from app import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the cyclic collector frees it


@pytest.fixture
def fresh(monkeypatch):
    monkeypatch.setattr(heap, "_runs", 0)
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_a_run_collects_its_own_garbage_and_older_cycles_wait_for_the_full_run(fresh):
    old = Node()
    old_ref = weakref.ref(old)
    assert heap.freeze() is True  # run 1 starts: `old` is alive, so it is frozen
    assert gc.get_freeze_count() > 0
    new = Node()
    new_ref = weakref.ref(new)
    del old, new
    gc.collect()  # what Streamlit runs after the script
    assert new_ref() is None  # allocated by this run: freed
    assert old_ref() is not None  # frozen: left alone (that is what makes the collection cheap)
    for _ in range(heap.FULL_EVERY - 2):
        assert heap.freeze() is True
    assert heap.freeze() is False  # the FULL_EVERY-th run unfreezes the heap...
    assert gc.get_freeze_count() == 0
    gc.collect()
    assert old_ref() is None  # ...and its collection frees the older cycle


def test_the_post_run_collection_scans_fewer_objects_when_frozen(fresh):
    keep = [[i] for i in range(200_000)]  # a large live heap of tracked objects
    heap.freeze()
    gc.collect()
    frozen = gc.get_freeze_count()
    assert frozen >= len(keep)
    assert sum(len(gc.get_objects(g)) for g in range(3)) < frozen  # the collector's lists hold the rest only
