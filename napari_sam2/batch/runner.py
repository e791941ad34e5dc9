"""Run a batch: plan the stacks, send one task per stack to dask workers, keep the report.

See :func:`run_batch`.
"""

from __future__ import annotations

import queue
import sys
import uuid
from pathlib import Path
from typing import Any

from napari_sam2.batch.report import REPORT_NAME, entry, plan_stack, remove_partials, write_json_atomic
from napari_sam2.batch.stacks import make_jobs, read_list
from napari_sam2.errors import BatchInputError

__all__ = ["run_batch"]

_POLL_S = 0.2


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_prompts(prompts) -> None:
    if prompts is None:
        return
    from napari_sam2.io.session_file import read_session

    read_session(prompts)  # a bad session file stops the batch before anything starts


def _check_seeding(seeds_dir, options) -> None:
    """The seeding options, checked as ``segment`` checks them (before anything starts)."""
    import argparse

    from napari_sam2.seeding import check_options

    if seeds_dir is not None:
        if not Path(seeds_dir).is_dir():
            raise BatchInputError(f"--seeds-dir '{seeds_dir}' is not a folder: give the folder holding "
                                  "one seed label image per stack")
        if options["auto_seed"] is not None:
            raise BatchInputError("choose --seeds-dir or --auto-seed (as for segment --seeds / --auto-seed)")
    if options["auto_seed"] is not None and options["auto_seed"] < 0:
        raise BatchInputError(f"--auto-seed {options['auto_seed']}: give a frame number, 0 or more")
    # --seed-frame without seeds is not checked here: a CSV list may give seeds to some stacks
    check_options(argparse.Namespace(**{**options, "seeds": seeds_dir, "seed_frame": None,
                                        "auto_seed_out": None}))


def _out_dir(out_dir) -> Path:
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise BatchInputError(f"--out-dir '{out}' is a file: give a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BatchInputError(f"--out-dir '{out}' cannot be created: {err.strerror or err}") from None
    return out


def _job_message(job, index: int) -> dict:
    return {"index": index, "input": job.input, "prompts": job.prompts, "seeds": job.seeds,
            "output": str(job.output),
            "stats": None if job.stats is None else str(job.stats), "record": str(job.record_path),
            "key": job.key, "options": job.options}


def _lost(err: BaseException) -> str:
    from distributed import KilledWorker

    if isinstance(err, KilledWorker):
        return ("the worker running it died each time it ran (killed, or out of memory); "
                "nothing of it was kept")
    return f"{type(err).__name__}: {' '.join(str(err).split())}"


def run_batch(inputs, out_dir, *, client=None, prompts=None, seeds_dir=None, seed_frame=None,
              auto_seed=None, auto_seed_points=32, auto_seed_min_area=64, auto_seed_iou=0.8,
              auto_seed_stability=0.9, list_file=None, model=None, device="auto", precision=None, axis=None,
              direction="both", start=None, stop=None, channels=None, contrast=None, stats=False,
              format="tif", workers=None, scheduler=None,
              retries=1, torch_threads=None, progress=True, dashboard_address=":8787") -> list[dict]:
    """Segment many stacks with the same options, one dask task per stack.

    Parameters
    ----------
    inputs : list of str or path
        Stacks (anything ``napari-sam2 segment`` reads). May be empty with ``list_file``.
    out_dir : str or path
        Where ``<stem>_labels.tif`` (or ``.zarr``), ``<stem>_stats.csv`` and
        ``batch-report.json`` go; created if missing.
    client : distributed.Client, optional
        Run on this client's cluster (left running). Otherwise ``scheduler`` is connected to, or
        a local cluster is started (and shut down at the end).
    prompts : str, optional
        Session file replayed on every stack without its own (``prompts`` column of a CSV list).
    seeds_dir : str, optional
        Folder with one seed label image per stack, ``<input stem>.tif`` (also ``.tiff``,
        ``_labels.tif``, ``_labels.tiff``, ``.npy``, ``_labels.npy``), given to its ``segment``
        run as ``--seeds`` (a ``seeds`` column of a CSV list names a stack's own). A stack with
        no seed file and no prompts fails (reported), the others go on.
    seed_frame : int, optional
        ``segment --seed-frame``: the frame a 2-D seed image is for (default 0).
    auto_seed, auto_seed_points, auto_seed_min_area, auto_seed_iou, auto_seed_stability
        ``segment --auto-seed N`` and its settings, for every stack (not with seeds).
    list_file : str, optional
        One stack per line, or a CSV with ``input``, ``prompts``, ``seeds``, ``output`` columns.
    model, device, precision, axis, direction, start, stop, channels, contrast
        As for ``napari-sam2 segment``.
    stats : bool
        Also write per-object statistics beside each label image.
    format : {"tif", "zarr"}
        Output format.
    workers : int, optional
        Size of the local cluster (default: one per GPU, else half the cores, at most 4).
    scheduler : str, optional
        ``tcp://HOST:PORT`` of a running dask scheduler.
    retries : int
        Times a stack that failed for a reason other than its input (memory, device) is sent
        again. A worker that dies is handled by dask (the stack is rerun elsewhere).
    torch_threads : int, optional
        Torch threads per worker (default for a local CPU cluster: cores / workers).
    progress : bool
        Show bars over stacks and frames (stderr).
    dashboard_address : str or None
        Local cluster only; the dashboard needs ``bokeh``.

    Returns
    -------
    list of dict
        The report (also in ``out_dir/batch-report.json``): one entry per stack with ``input``,
        ``output``, ``status`` ("done", "failed", "skipped"), ``error``, ``frames``, ``seconds``,
        ``attempts``, ``worker``, the input identity and the settings.

    Raises
    ------
    BatchInputError, SessionFileError
        When the batch cannot start (no inputs, bad list or session file, colliding outputs).
    KeyboardInterrupt
        After Ctrl-C: running stacks are cancelled, the report says which did not finish.
    """
    from tqdm import tqdm

    out = _out_dir(out_dir)
    entries = [str(p) for p in (inputs or [])] + (read_list(list_file) if list_file else [])
    _check_prompts(prompts)
    options = dict(model=model, device=device, precision=precision, axis=axis, direction=direction,
                   start=start, stop=stop, channels=list(channels) if channels else None,
                   contrast=list(contrast) if contrast is not None else None, seed_frame=seed_frame,
                   auto_seed=auto_seed, auto_seed_points=auto_seed_points,
                   auto_seed_min_area=auto_seed_min_area, auto_seed_iou=auto_seed_iou,
                   auto_seed_stability=auto_seed_stability)
    _check_seeding(seeds_dir, options)
    if seed_frame is not None and seeds_dir is None and not any(isinstance(e, dict) and e.get("seeds")
                                                                for e in entries):
        raise BatchInputError("--seed-frame needs --seeds-dir DIR (or a 'seeds' column in the --list CSV)")
    jobs = make_jobs(entries, out, prompts=prompts, seeds_dir=seeds_dir, options=options, stats=stats,
                     fmt=format)
    report_path = out / REPORT_NAME
    results: dict[int, dict] = {}
    to_run = []
    for i, job in enumerate(jobs):
        action, record, message = plan_stack(job)
        if action == "skip":
            assert record is not None  # plan_stack returns the record it skips for
            results[i] = entry(job, "skipped", frames=record.get("frames"), seconds=record.get("seconds"),
                               attempts=0, worker=record.get("worker"))
        elif action == "conflict":
            results[i] = entry(job, "failed", error=message, attempts=0)
        elif job.identity is None:
            results[i] = entry(job, "failed", error=f"input '{job.input}' does not exist", attempts=0)
        elif job.error is not None:  # no seed file and no prompts: the others go on
            results[i] = entry(job, "failed", error=job.error, attempts=0)
        else:
            remove_partials(job)
            to_run.append(i)

    def write_report():
        write_json_atomic(report_path, [results[i] for i in sorted(results)])

    write_report()
    own_client = cluster = None
    if to_run and client is None:
        from distributed import Client

        if scheduler:
            from napari_sam2.batch.cluster import connect

            client = own_client = connect(scheduler)
        else:
            from napari_sam2.batch.cluster import start_local_cluster

            cluster, _, torch_threads = start_local_cluster(
                workers, device=device, torch_threads=torch_threads, dashboard_address=dashboard_address)
            client = own_client = Client(cluster)

    bars: list = []
    try:
        if to_run:
            _run(client, jobs, to_run, results, write_report, retries=retries, torch_threads=torch_threads,
                 progress=progress, tqdm=tqdm, bars=bars)
            for i in to_run:  # every attempt has ended: drop what killed ones left
                remove_partials(jobs[i])
    except KeyboardInterrupt:
        for i in range(len(jobs)):
            results.setdefault(i, entry(jobs[i], "failed", error="not finished: the batch was interrupted"))
        raise
    finally:
        for bar in bars:
            bar.close()
        write_report()
        if cluster is not None and own_client is not None:
            from napari_sam2.batch.cluster import quiet_shutdown

            quiet_shutdown(own_client)
        if own_client is not None:
            own_client.close(timeout=30)
        if cluster is not None:
            cluster.close(timeout=30)
            for i in to_run:  # the workers are gone, none can still be writing
                remove_partials(jobs[i])
        counts = {s: sum(r["status"] == s for r in results.values()) for s in ("done", "skipped", "failed")}
        _say(f"napari-sam2: batch: {counts['done']} done, {counts['skipped']} skipped, "
             f"{counts['failed']} failed of {len(jobs)} stack(s); report {report_path}")
        for i in sorted(results):
            if results[i]["status"] == "failed":
                _say(f"napari-sam2:   failed {results[i]['input']}: {results[i]['error']}")
    return [results[i] for i in sorted(results)]


def _run(client, jobs, to_run, results, write_report, *, retries, torch_threads, progress, tqdm, bars):
    from distributed import wait

    from napari_sam2.batch.cluster import dashboard_link
    from napari_sam2.batch.worker import ModelCache, run_stack

    client.register_plugin(ModelCache(torch_threads=torch_threads))
    n_workers = len(client.scheduler_info().get("workers", {}))
    link = dashboard_link(client)
    _say(f"napari-sam2: batch of {len(jobs)} stack(s), {len(to_run)} to run on {n_workers} worker(s) "
         f"at {client.scheduler.address}" + (f"; dashboard {link}" if link else "")
         + ("" if n_workers else " (waiting for workers to join)"))
    topic = f"napari-sam2-batch-{uuid.uuid4().hex[:12]}"
    events: queue.Queue[dict[str, Any]] = queue.Queue()  # the workers' messages (see run_stack)
    client.subscribe_topic(topic, lambda event: events.put(event[1]))
    # in a log file (a SLURM job's output) a bar is a line per update: fewer of them there
    every = 0.5 if sys.stderr.isatty() else 60
    stack_bar = tqdm(total=len(jobs), initial=len(results), desc="stacks", unit="stack",
                     file=sys.stderr, disable=not progress, position=0, dynamic_ncols=True,
                     mininterval=every)
    frame_bar = tqdm(total=0, desc="frames", unit="frame", file=sys.stderr, disable=not progress,
                     position=1, dynamic_ncols=True, mininterval=every)
    bars += [stack_bar, frame_bar]
    seen: dict[int, dict[str, int]] = {}  # stack -> {"done", "total", "starts"}

    def drain():
        changed = False
        while True:
            try:
                msg = events.get_nowait()
            except queue.Empty:
                break
            s = seen.setdefault(msg["stack"], {"done": 0, "total": 0, "starts": 0})
            if msg["event"] == "start":  # a new attempt (the first, or after a worker died)
                s["starts"] += 1
                frame_bar.n -= s["done"]
                frame_bar.total -= s["total"]
                s["done"] = s["total"] = 0
            elif msg["event"] == "progress":
                frame_bar.total += msg["total"] - s["total"]
                frame_bar.n += msg["done"] - s["done"]
                s["done"], s["total"] = msg["done"], msg["total"]
            changed = True
        if changed:
            frame_bar.refresh()

    def submit(i):
        job = jobs[i]
        return client.submit(run_stack, _job_message(job, i), topic, pure=False,
                             key=f"napari-sam2-{job.output.name}-{uuid.uuid4().hex[:8]}")

    pending = {submit(i): i for i in to_run}
    resent = {i: 0 for i in to_run}
    try:
        while pending:
            try:
                finished = wait(list(pending), timeout=_POLL_S, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                finished = ()
            drain()
            for fut in finished:
                i = pending.pop(fut)
                job = jobs[i]
                try:
                    outcome = fut.result()
                except Exception as err:
                    outcome = {"status": "failed", "error": _lost(err), "retryable": False}
                # drop the result from the cluster now: a worker lost later must not make the
                # scheduler rerun a finished stack to rebuild a result nobody needs
                fut.release()
                if outcome["status"] == "failed" and outcome.get("retryable") and resent[i] < retries:
                    resent[i] += 1
                    stack_bar.write(f"napari-sam2: retrying {job.input} ({outcome['error']})",
                                    file=sys.stderr)
                    pending[submit(i)] = i
                    continue
                attempts = max(seen.get(i, {}).get("starts", 0), resent[i] + 1)
                extra = {"attempts": attempts, "worker": outcome.get("worker"),
                         "model_loads": outcome.get("model_loads")}
                if outcome["status"] == "failed" and outcome.get("log"):
                    extra["log"] = outcome["log"]
                results[i] = entry(job, outcome["status"], error=outcome.get("error"),
                                   frames=outcome.get("frames"), seconds=outcome.get("seconds"), **extra)
                write_report()
                stack_bar.update(1)
                if outcome["status"] == "done":
                    stack_bar.write(f"napari-sam2: done {job.input} -> {job.output} ({outcome['frames']} "
                                    f"frames, {outcome['seconds']:.1f} s)", file=sys.stderr)
                else:
                    stack_bar.write(f"napari-sam2: failed {job.input}: {outcome['error']}", file=sys.stderr)
    except BaseException:
        for fut in pending:
            fut.cancel()
        raise
    finally:
        try:
            client.unsubscribe_topic(topic)
        except Exception:  # the client may be closing after an interrupt
            pass
