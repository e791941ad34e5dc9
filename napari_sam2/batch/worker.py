"""What runs on a dask worker: one task per stack, the model loaded once per worker process.

:func:`run_stack` runs the very code of ``napari-sam2 segment`` (:func:`napari_sam2.cli._segment`)
on one stack, so its labels and statistics are exactly what ``segment`` writes with the same
options. It writes to hidden partial names and moves them into place only once complete, then
writes the stack's completion record; a failed or killed stack leaves nothing that looks done.

:class:`ModelCache` is a worker plugin: each worker process keeps the models it loaded (by name
and device) for its next stacks, and can set the number of torch threads.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, cast

from distributed import WorkerPlugin, get_worker

from napari_sam2.batch.report import partial_name, write_json_atomic
from napari_sam2.errors import one_line

__all__ = ["ModelCache", "run_stack", "PLUGIN_NAME"]

PLUGIN_NAME = "napari-sam2-models"
#: Least time between two progress events of one stack (seconds).
_PROGRESS_EVERY = 0.25


class ModelCache(WorkerPlugin):
    """Per-worker-process store of loaded SAM 2 models.

    Parameters
    ----------
    torch_threads : int, optional
        ``torch.set_num_threads`` on each worker (several CPU workers on one machine split its
        cores instead of each using all of them).
    """

    name = PLUGIN_NAME

    def __init__(self, torch_threads: int | None = None):
        self._reset(torch_threads)

    def _reset(self, torch_threads: int | None = None) -> None:
        """Set the options, with no model loaded (a copy sent to a worker loads its own)."""
        self.torch_threads = torch_threads
        self.models: dict[tuple, Any] = {}
        self.loads = 0

    def __getstate__(self):
        return {"torch_threads": self.torch_threads}

    def __setstate__(self, state):
        self._reset(**state)

    def setup(self, worker=None):
        """Set the worker's torch threads once, when the plugin is registered on it."""
        self._lock = threading.Lock()
        if self.torch_threads:
            import torch

            torch.set_num_threads(int(self.torch_threads))

    def get(self, args, settings):
        """The model ``segment`` would load for these options, loaded on first use."""
        from napari_sam2 import cli

        key = (cli._model_name(args, settings), args.device, cli._precision(args, settings)[0])
        lock = getattr(self, "_lock", None) or threading.Lock()
        with lock:
            if key not in self.models:
                self.models[key] = cli._load_model(args, settings)
                self.loads += 1
            return self.models[key]


@functools.lru_cache(maxsize=1)
def _segment_defaults() -> dict:
    """Every option of ``segment`` with its default, from its own parser.

    An option added to ``segment`` later is then set here too, at the value a plain ``segment``
    run has.
    """
    from napari_sam2 import cli

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest: a.default for a in sub.choices["segment"]._actions
            if a.dest != "help" and a.default is not argparse.SUPPRESS}


def _segment_args(job: dict, out: Path, stats: Path | None) -> argparse.Namespace:
    o = job["options"]
    args = argparse.Namespace(**dict(_segment_defaults()))
    for name, value in o.items():  # None: not given, segment's default (e.g. --auto-seed-iou 0.8)
        if value is not None:
            setattr(args, name, value)
    args.command, args.input = "segment", job["input"]
    args.prompts, args.seeds = job["prompts"], job.get("seeds")
    args.out, args.stats = str(out), None if stats is None else str(stats)
    args.save_session = args.auto_seed_out = None
    return args


def _remove(path: Path | None) -> None:
    if path is None or not os.path.lexists(path):
        return
    if path.is_dir():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _place(tmp: Path, final: Path) -> None:
    if os.path.lexists(final):  # never replace a finished output (another run wrote it meanwhile)
        raise FileExistsError(f"{final} appeared while this stack ran (another batch writing to the "
                              "same folder?): it is kept and this result dropped")
    os.replace(tmp, final)


def _finished_record(job: dict) -> dict | None:
    """The completion record of this stack if its outputs exist for the same key."""
    import json

    try:
        record = json.loads(Path(job["record"]).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    outputs = [job["output"]] + ([job["stats"]] if job.get("stats") else [])
    same_key = isinstance(record, dict) and record.get("key") == job["key"]
    if same_key and all(os.path.exists(p) for p in outputs):
        return record
    return None


def run_stack(job: dict, topic: str | None = None) -> dict:
    """Segment one stack (a dask task); returns the outcome, never raises for a bad stack.

    Parameters
    ----------
    job : dict
        ``index``, ``input``, ``prompts``, ``seeds``, ``output``, ``stats``, ``record``, ``key``
        and the ``segment`` ``options``.
    topic : str, optional
        Event topic for progress messages to the client.

    Returns
    -------
    dict
        ``status`` ("done" or "failed"), ``error`` (one line), ``retryable``, ``frames``,
        ``seconds``, ``worker``, ``log`` (the last lines ``segment`` printed).
    """
    from napari_sam2 import cli
    from napari_sam2.io.session_file import SessionFile, read_session

    t0 = time.perf_counter()
    try:
        worker = get_worker()
    except ValueError:  # called outside a worker (a plain loop): no progress events, no cache reuse
        worker = None
    # the plugin registered under PLUGIN_NAME is a ModelCache (see start_local_cluster)
    plugin = worker.plugins.get(PLUGIN_NAME) if worker is not None else None
    cache = cast(ModelCache, plugin) if plugin is not None else ModelCache()
    where = worker.address if worker is not None else socket.gethostname()

    def send(msg):
        if worker is not None and topic:
            worker.log_event(topic, {"stack": job["index"], **msg})

    send({"event": "start", "pid": os.getpid(), "worker": where})
    done_before = _finished_record(job)
    if done_before is not None:  # this very stack was finished meanwhile (a rerun elsewhere)
        send({"event": "end", "status": "done"})
        return {"status": "done", "error": None, "frames": done_before.get("frames"),
                "seconds": done_before.get("seconds"), "worker": done_before.get("worker"),
                "pid": os.getpid(), "model_loads": cache.loads, "log": []}
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    final, final_stats = Path(job["output"]), (Path(job["stats"]) if job.get("stats") else None)
    out_tmp = partial_name(final, token)
    stats_tmp = partial_name(final_stats, token) if final_stats is not None else None
    args = _segment_args(job, out_tmp, stats_tmp)
    frames, last = set(), [0.0]

    def on_frame(frame, done, total):
        if frame is not None:
            frames.add(frame)
        now = time.monotonic()
        if frame is None or done == total or now - last[0] >= _PROGRESS_EVERY:
            last[0] = now
            send({"event": "progress", "done": done, "total": total})

    log = io.StringIO()
    outcome = {"worker": where, "pid": os.getpid()}
    try:
        for tmp in (out_tmp, stats_tmp):
            if tmp is not None:
                tmp.parent.mkdir()
        with contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
            settings = (read_session(job["prompts"]) if job["prompts"] else SessionFile()).settings
            model = cache.get(args, settings)
            status = cli._segment(args, model=model, on_frame=on_frame)
        if status != cli.EXIT_OK:
            raise RuntimeError(f"segment stopped (exit status {status}) before the stack was complete")
        if final_stats is not None and stats_tmp is not None:
            _place(stats_tmp, final_stats)
        _place(out_tmp, final)
        seconds = time.perf_counter() - t0
        record = {"key": job["key"], "input": job["input"], "output": str(final),
                  "stats": None if final_stats is None else str(final_stats), "frames": len(frames),
                  "seconds": round(seconds, 3), "worker": where, "host": socket.gethostname(),
                  "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        Path(job["record"]).parent.mkdir(exist_ok=True)
        write_json_atomic(job["record"], record)
        outcome.update(status="done", error=None, frames=len(frames), seconds=seconds)
    except FileExistsError as err:
        earlier = _finished_record(job)  # the same stack, finished by an earlier attempt meanwhile
        if earlier is not None:
            outcome.update(status="done", error=None, frames=earlier.get("frames"),
                           seconds=earlier.get("seconds"))
        else:
            outcome.update(status="failed", error=one_line(err), frames=len(frames),
                           seconds=time.perf_counter() - t0, retryable=True)
    except Exception as err:  # a bad stack is reported, the batch goes on
        message = one_line(err)
        if not isinstance(err, (ValueError, OSError)):
            message = f"{type(err).__name__}: {message}"
        outcome.update(status="failed", error=message, frames=len(frames),
                       seconds=time.perf_counter() - t0,
                       # bad input fails again; anything else (memory, device) may not
                       retryable=not isinstance(err, ValueError))
    finally:
        for tmp in (out_tmp, stats_tmp):
            if tmp is not None:
                _remove(tmp.parent)
    outcome["log"] = log.getvalue().strip().splitlines()[-5:]
    outcome["model_loads"] = cache.loads
    send({"event": "end", "status": outcome["status"]})
    return outcome
