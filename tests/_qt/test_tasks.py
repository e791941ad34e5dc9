"""The dock's work queue: tasks in order, in napari's thread workers, below the GUI's priority."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from napari_sam2._qt.tasks import WORKER_NICENESS, TaskQueue


def _priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _threads_of_this_process() -> dict[int, int]:
    """Nice value of every thread of this process (Linux /proc), by thread id."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            out[int(tid)] = os.getpriority(os.PRIO_PROCESS, int(tid))
        except OSError:  # the thread ended meanwhile
            pass
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="nice values per thread are Linux's")
def test_work_runs_below_the_gui_thread_and_so_do_torchs_threads(qtbot):
    import torch

    gui = _priority()
    errors: list = []
    results: list = []
    yielded: list = []
    queue = TaskQueue(on_error=errors.append)

    def task():
        a = torch.rand(512, 512)
        for _ in range(20):  # parallel work: torch's OpenMP threads for this thread start now
            a = a @ a.T / 512
        return threading.get_native_id(), _priority(), torch.get_num_threads(), _threads_of_this_process()

    def steps():
        yield _priority()
        yield _priority()

    queue.submit(task, on_result=results.append)
    queue.submit(steps, on_yield=yielded.append)
    qtbot.waitUntil(lambda: not queue.busy and not len(queue), timeout=60_000)
    assert not errors, errors
    tid, nice, threads, all_threads = results[0]
    assert nice == max(gui, WORKER_NICENESS) and yielded == [nice, nice]
    assert threads == torch.get_num_threads(), "the GUI thread's torch thread count"
    assert _priority() == gui, "the GUI thread keeps its priority"
    if threads > 1:  # torch's helpers for the worker were started by it: they inherit its priority
        assert sum(n == nice for n in all_threads.values()) >= 2
