"""``napari-sam2 batch``: the command line of :func:`napari_sam2.batch.run_batch`.

Exit status: 0 when every stack is done (or was already), 1 when some failed (the report says
why), 2 for usage errors (nothing is run), 130 after Ctrl-C and 143 after SIGTERM (running
stacks are cancelled, the report written; the same command finishes the batch).
"""

from __future__ import annotations

import copy
import signal
import sys

__all__ = ["add_batch_parser", "run_command"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_TERMINATED = 0, 1, 2, 130, 143
#: ``segment`` options that batch takes unchanged (same names, help and defaults).
_SEGMENT_OPTIONS = ("model", "device", "precision", "direction", "start", "stop", "axis", "channels",
                    "contrast")
#: ``segment``'s seeding options that batch takes unchanged (``--seeds`` becomes ``--seeds-dir``).
_SEED_OPTIONS = ("seed_frame", "auto_seed", "auto_seed_points", "auto_seed_min_area", "auto_seed_iou",
                 "auto_seed_stability")

_EPILOG = """\
Each INPUT (or line of --list) is one stack; anything `napari-sam2 segment` reads. Results go to
DIR/<stem>_labels.tif (or .zarr), DIR/<stem>_stats.csv with --stats, and DIR/batch-report.json,
a list of {"input", "output", "status": "done"|"failed"|"skipped", "error", "frames", "seconds"}
rewritten as stacks finish. A stack's labels are exactly what `segment` writes for it.

Objects come from --prompts (replayed on every stack), from --seeds-dir (each stack's label
image DIR/<stem>.tif, or <stem>.tiff, <stem>_labels.tif, <stem>_labels.tiff, <stem>.npy,
<stem>_labels.npy, is its `segment --seeds`), from --auto-seed N, or from --prompts with one of
the two. A stack with no seed file and no prompts fails (in the report); the others go on.

A list file holds one path per line, or (.csv) a header row with an 'input' column and
optionally 'prompts' (a session file for that stack), 'seeds' (its seed label image) and
'output' (its label file name).

Rerunning the same command skips the stacks already done for the same input and settings
(options, prompts and seed file contents), and runs the failed and unfinished ones; finished
outputs are never rewritten.

Without --scheduler a cluster is started on this machine: one worker per GPU (each pinned to
its GPU), or a few CPU workers that split the cores. With --scheduler tcp://HOST:PORT the stacks
go to the workers of that dask scheduler (e.g. started by dask-jobqueue on SLURM); every worker
must see the input, output and model paths.
"""


def add_batch_parser(subparsers, segment_parser):
    """Add the ``batch`` sub-command, taking the per-stack options from ``segment``'s parser."""
    import argparse

    p = subparsers.add_parser(
        "batch", help="segment many stacks with the same prompts or seeding, on a dask cluster",
        description="Segment many stacks with the same options, one dask task per stack, on this\n"
                    "machine or on a running dask scheduler's workers.",
        epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("inputs", metavar="INPUT", nargs="*", help="image stacks to segment")
    p.add_argument("--list", metavar="FILE", dest="list_file",
                   help="file with one stack per line, or a CSV with "
                        "input[,prompts][,seeds][,output] columns")
    p.add_argument("--out-dir", metavar="DIR", required=True, help="folder for the results (created)")
    p.add_argument("--prompts", metavar="SESSION.json",
                   help="session file replayed on every stack (a CSV list may give one per stack)")
    for action in segment_parser._actions:
        if action.dest in _SEGMENT_OPTIONS:
            p._add_action(copy.copy(action))
    seeding = p.add_argument_group("seeding objects (with or without --prompts), as for segment")
    seeding.add_argument("--seeds-dir", metavar="DIR",
                         help="folder with one seed label image per stack, named DIR/<stem>.tif (or "
                              ".tiff, _labels.tif, _labels.tiff, .npy, _labels.npy): segment --seeds")
    for action in segment_parser._actions:
        if action.dest in _SEED_OPTIONS:
            action = copy.copy(action)
            if action.dest == "seed_frame":
                action.help = "the frame a 2-D seed image is for (default 0); with a stack, only this frame"
            seeding._add_action(action)
    p.add_argument("--stats", action="store_true",
                   help="also write per-object statistics as DIR/<stem>_stats.csv")
    p.add_argument("--format", choices=("tif", "zarr"), default="tif",
                   help="label files as ImageJ TIFF or OME-Zarr (default: tif)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="worker processes of the local cluster (default: one per GPU, else half "
                        "the cores, at most 4)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="run on the workers of this dask scheduler instead of a local cluster")
    p.add_argument("--retries", type=int, default=1, metavar="N",
                   help="times a stack that failed for a reason other than its input (memory, "
                        "device) is sent again (default: 1)")
    p.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch threads per worker (default on a local CPU cluster: cores / workers)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _check(args) -> None:
    from napari_sam2.errors import BatchInputError

    if not args.inputs and not args.list_file:
        raise BatchInputError("no stacks to segment: give INPUT paths or --list FILE")
    if args.contrast is not None and not args.contrast[0] < args.contrast[1]:
        raise BatchInputError(f"--contrast {args.contrast[0]:g} {args.contrast[1]:g}: LO must be below HI")
    for option, value in (("--workers", args.workers), ("--torch-threads", args.torch_threads)):
        if value is not None and value < 1:
            raise BatchInputError(f"{option} {value}: give at least 1")
    if args.retries < 0:
        raise BatchInputError(f"--retries {args.retries}: give 0 or more")
    if args.workers is not None and args.scheduler:
        raise BatchInputError("--workers sizes the local cluster; with --scheduler the workers are "
                              "those of that scheduler: give one or the other")
    if args.scheduler and "://" not in args.scheduler:
        raise BatchInputError(f"--scheduler {args.scheduler}: give the address as tcp://HOST:PORT")
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise BatchInputError("napari-sam2 batch needs dask.distributed: pip install "
                              "\"napari-sam2[batch]\" (or: pip install distributed)") from None


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C (exit status 143 instead of 130)."""


def _sigterm_as_interrupt(signum, frame):
    raise _Terminated


def run_command(args) -> int:
    """Run ``napari-sam2 batch`` from parsed arguments; returns the exit status."""
    from napari_sam2.batch.runner import run_batch

    _check(args)
    try:  # a scheduler (SLURM's scancel, systemd) stopping us: same clean stop as Ctrl-C
        previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        report = run_batch(
            args.inputs, args.out_dir, prompts=args.prompts, list_file=args.list_file,
            seeds_dir=args.seeds_dir, seed_frame=args.seed_frame, auto_seed=args.auto_seed,
            auto_seed_points=args.auto_seed_points, auto_seed_min_area=args.auto_seed_min_area,
            auto_seed_iou=args.auto_seed_iou, auto_seed_stability=args.auto_seed_stability,
            model=args.model, device=args.device, precision=args.precision, axis=args.axis,
            direction=args.direction,
            start=args.start, stop=args.stop, channels=args.channels, contrast=args.contrast,
            stats=args.stats, format=args.format, workers=args.workers, scheduler=args.scheduler,
            retries=args.retries, torch_threads=args.torch_threads, progress=not args.no_progress)
    except KeyboardInterrupt as stop:
        print("napari-sam2: batch interrupted: finished stacks are kept, the others run on the "
              "next start of the same command", file=sys.stderr, flush=True)
        return EXIT_TERMINATED if isinstance(stop, _Terminated) else EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return EXIT_FAILED if any(r["status"] == "failed" for r in report) else EXIT_OK
