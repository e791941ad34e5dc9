"""One task at a time, in order, off the GUI thread: the dock's work queue.

Prompts must reach the engine in the order the user made them, and a propagation must not run
while a click is being answered, so the dock queues every piece of engine work here. Each task
runs in a napari ``thread_worker`` (or inline when ``synchronous``, for tests and scripts); its
results, yields and errors come back on the GUI thread, where layers may be touched.

Inside every worker thread, torch gets the GUI thread's thread count: OpenMP's setting is per
thread, so a new thread would otherwise start one thread per core next to napari's renderer.
On Linux the worker thread also runs a little below the GUI thread's priority (and so do the
threads it starts: torch's OpenMP helpers, the label-write preparation). On a machine with few
cores the engine then still takes every idle cycle, but the window's own work (copying a
painted frame in, a repaint) no longer waits behind it.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable

__all__ = ["TaskQueue"]


def _torch_threads() -> int | None:
    torch = sys.modules.get("torch")  # never import torch just for this
    return None if torch is None else torch.get_num_threads()


#: nice steps the dock's worker threads run below the GUI thread (Linux)
WORKER_NICENESS = 5


def _below_the_gui() -> None:
    """Lower this thread's priority to :data:`WORKER_NICENESS` (Linux; elsewhere nothing).

    Threads started from this one later inherit it. Raising a nice value needs no privilege;
    it is never lowered again (that would), so the thread stays a background thread.
    """
    if not sys.platform.startswith("linux"):  # elsewhere nice values are per process
        return
    import os
    import threading

    tid = threading.get_native_id()
    try:
        now = os.getpriority(os.PRIO_PROCESS, tid)
        if now < WORKER_NICENESS:
            os.setpriority(os.PRIO_PROCESS, tid, WORKER_NICENESS)
    except OSError:  # a sandbox that forbids it: the work runs at the GUI's priority
        pass


def _in_worker(fn, threads):
    """Run ``fn`` with torch's thread count set for this thread (generators stay generators)."""
    import inspect

    def setup():
        _below_the_gui()  # first: torch's OpenMP threads, started later, inherit it
        if threads is not None:
            import torch

            torch.set_num_threads(threads)

    if inspect.isgeneratorfunction(fn):
        def gen():
            setup()
            return (yield from fn())
        return gen

    def call():
        setup()
        return fn()
    return call


class TaskQueue:
    """Queue of engine work for one dock.

    Parameters
    ----------
    on_error : callable
        Called on the GUI thread with the exception of a failed task; the queue goes on.
    """

    def __init__(self, on_error: Callable[[BaseException], object]) -> None:
        self.on_error = on_error
        self.synchronous = False
        self.busy = False
        self.worker = None
        self._queue: deque = deque()

    def __len__(self) -> int:
        return len(self._queue)

    def clear(self) -> None:
        self._queue.clear()

    def submit(self, fn, on_result=None, progress=None, on_yield=None, on_finish=None) -> None:
        """Queue ``fn`` (a function, or a generator function when ``on_yield`` is given)."""
        self._queue.append((fn, on_result, progress, on_yield, on_finish))
        if not self.busy:
            self._run_next()

    def _run_next(self, *_):
        if not self._queue:
            self.busy = False
            self.worker = None
            return
        self.busy = True
        fn, on_result, progress, on_yield, on_finish = self._queue.popleft()
        if self.synchronous:
            self._run_inline(fn, on_result, on_yield, on_finish)
            self._run_next()
            return
        from napari.qt.threading import create_worker

        prog = {"desc": progress} if isinstance(progress, str) else progress
        worker = create_worker(_in_worker(fn, _torch_threads()), _progress=prog, _ignore_errors=True)
        if on_yield is not None:
            worker.yielded.connect(on_yield)
        if on_result is not None:
            worker.returned.connect(on_result)
        worker.errored.connect(self.on_error)
        if on_finish is not None:
            worker.finished.connect(on_finish)
        worker.finished.connect(self._run_next)
        self.worker = worker
        worker.start()

    def _run_inline(self, fn, on_result, on_yield, on_finish):
        try:
            result = fn()
            if on_yield is not None:  # a generator: yields, then maybe returns a value
                while True:
                    try:
                        item = next(result)
                    except StopIteration as stop:
                        result = stop.value
                        break
                    on_yield(item)
            if on_result is not None:
                on_result(result)
        except Exception as err:  # noqa: BLE001 - shown to the user, the dock stays usable
            self.on_error(err)
        finally:
            if on_finish is not None:
                on_finish()

    def quit(self) -> None:
        if self.worker is not None and hasattr(self.worker, "quit"):
            self.worker.quit()

    def wait(self, timeout: float = 60.0) -> None:
        """Run the Qt event loop until queued work is done (for scripts and tests).

        A nested ``QEventLoop`` runs as napari's own loop does: Qt's painting and event handling
        happen without Python's global lock, so the worker thread keeps computing meanwhile (a
        loop of ``processEvents`` calls holds that lock through every repaint and starves it).
        """
        from qtpy.QtCore import QEventLoop, QTimer

        end = time.monotonic() + timeout
        loop = QEventLoop()
        poll = QTimer()
        poll.setInterval(10)

        def check():
            if not (self.busy or self._queue) or time.monotonic() >= end:
                loop.quit()

        poll.timeout.connect(check)
        poll.start()
        check()
        if self.busy or self._queue:
            loop.exec()
        poll.stop()
        if self.busy or self._queue:
            raise TimeoutError("SAM 2 work did not finish in time")
