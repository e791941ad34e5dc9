"""Freed working memory goes back to the system during and after a propagation (glibc)."""

from __future__ import annotations

import sys

import numpy as np
import psutil
import pytest

from napari_sam2 import Sam2Session
from napari_sam2.engine.heap import HeapTrimmer

glibc = pytest.mark.skipif(not HeapTrimmer().available, reason="malloc_trim is glibc's (Linux)")


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_trims_at_most_once_per_interval():
    clock = Clock()
    heap = HeapTrimmer(interval=5.0, clock=clock)
    assert not heap.maybe() and heap.trims == 0
    clock.t += 4.9
    assert not heap.maybe()
    clock.t += 0.2
    assert heap.maybe() is heap.available
    assert not heap.maybe(), "the interval starts again"
    clock.t += 5.0
    assert heap.maybe() is heap.available
    assert heap.trims == (2 if heap.available else 0)


@glibc
def test_a_fragmented_heap_gives_its_free_pages_back():
    proc = psutil.Process()
    blocks = [np.ones(4096 // 8) for _ in range(60_000)]  # ~240 MiB of 4 KiB blocks on the heap
    survivors = blocks[::64]  # one block in 64 stays: the heap cannot shrink from the top
    del blocks
    before = proc.memory_info().rss
    assert HeapTrimmer().now()
    freed_mib = (before - proc.memory_info().rss) / 2**20
    assert freed_mib > 100, f"only {freed_mib:.0f} MiB went back to the system"
    assert len(survivors) == 938


@glibc
def test_a_propagation_trims_the_heap_when_it_ends(tiny_model, blobs_stack):
    session = Sam2Session(tiny_model, blobs_stack)
    session.add_points(0, 1, [[20, 20]], [1])
    session._heap.interval = 1e9  # no trim between frames: only the one at the end
    first = session._heap.trims
    for frame, _ in session.propagate("forward"):
        if frame == 2:
            break  # a run stopped early ends too
    assert session._heap.trims == first + 1
    assert sys.platform.startswith("linux")
    list(session.propagate("backward"))
    assert session._heap.trims == first + 2
