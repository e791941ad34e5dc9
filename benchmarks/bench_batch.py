"""Stacks per hour of ``napari-sam2 batch`` against the number of workers, and the cluster's cost.

Makes N synthetic time-lapse stacks and a session file, then segments them

* serially in one process (the model loaded once, ``segment``'s code called per stack): the
  baseline a plain Python loop gives;
* with :func:`napari_sam2.batch.run_batch` on a local cluster of 1, 2, ... worker processes
  (the cores split between their torch threads), timing the cluster's start apart.

The network is the random tiny SAM 2 of :mod:`napari_sam2.testing` (no weights are downloaded),
so the absolute figures are those of a small model; the overhead and the scaling are the point.

    python benchmarks/bench_batch.py                       # 6 stacks of 16 frames, 1 and 2 workers
    python benchmarks/bench_batch.py --stacks 12 --frames 32 --workers 1 2 4 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def make_inputs(folder: Path, n_stacks: int, n_frames: int, size: int):
    import tifffile

    from napari_sam2.samples import make_cells_timelapse

    stacks = []
    for i in range(n_stacks):
        cells = make_cells_timelapse(n_frames=n_frames, shape=(size, size), n_cells=4, seed=i)
        path = folder / f"well{i:03d}.tif"
        tifffile.imwrite(path, cells.image, imagej=True, metadata={"axes": "TYX"})
        stacks.append(str(path))
    session = folder / "session.json"
    session.write_text(json.dumps({"format": "napari-sam2-session", "version": 1, "objects": [
        {"id": 1, "prompts": [{"frame": 0, "points": [[size * 0.4, size * 0.4]], "labels": [1]}]},
        {"id": 2, "prompts": [{"frame": 0, "box": [[size * 0.6, size * 0.6], [size * 0.8, size * 0.8]]}]}]}))
    return stacks, str(session)


def serial(stacks, session, model_dir, out: Path) -> dict:
    """One process, one model, ``segment``'s code per stack (what a notebook loop does)."""
    import contextlib
    import io

    from napari_sam2 import cli
    from napari_sam2.batch.worker import _segment_args
    from napari_sam2.io.session_file import read_session

    out.mkdir()
    t0 = time.perf_counter()
    model = None
    for path in stacks:
        job = {"input": path, "prompts": session, "options": {"model": model_dir, "device": "cpu"}}
        args = _segment_args(job, out / (Path(path).stem + "_labels.tif"), None)
        with contextlib.redirect_stderr(io.StringIO()):
            if model is None:
                model = cli._load_model(args, read_session(session).settings)
            assert cli._segment(args, model=model) == 0
    return {"seconds": time.perf_counter() - t0, "startup": 0.0}


def batch(stacks, session, model_dir, out: Path, n_workers: int) -> dict:
    from distributed import Client

    from napari_sam2.batch import run_batch
    from napari_sam2.batch.cluster import start_local_cluster

    t0 = time.perf_counter()
    cluster, _, threads = start_local_cluster(n_workers, device="cpu", dashboard_address=None)
    client = Client(cluster)
    client.wait_for_workers(n_workers, timeout=300)
    started = time.perf_counter()
    try:
        report = run_batch(stacks, out, client=client, prompts=session, model=model_dir, device="cpu",
                           torch_threads=threads, progress=False)
    finally:
        client.close()
        cluster.close()
    end = time.perf_counter()
    assert all(r["status"] == "done" for r in report), report
    return {"seconds": end - t0, "startup": started - t0, "threads": threads}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stacks", type=int, default=6)
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=128, help="frame side in pixels")
    p.add_argument("--image-size", type=int, default=256, help="model input size (multiple of 64)")
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = p.parse_args(argv)

    import torch

    from napari_sam2.testing import save_tiny_model

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores)
    load_start = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    try:
        stacks, session = make_inputs(tmp, args.stacks, args.frames, args.size)
        model_dir = str(save_tiny_model(tmp / "model", image_size=args.image_size))
        rows = [{"run": f"serial loop ({cores} threads)",
                 **serial(stacks, session, model_dir, tmp / "serial")}]
        for n in args.workers:
            rows.append({"run": f"batch, {n} worker(s)",
                         **batch(stacks, session, model_dir, tmp / f"w{n}", n)})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"machine: {platform.processor() or platform.machine()}, {cores} cores, torch {torch.__version__}, "
          f"python {sys.version.split()[0]}")
    print(f"load average (1 min): {load_start:.1f} at the start, {os.getloadavg()[0]:.1f} at the end")
    print(f"{args.stacks} stacks of {args.frames} frames of {args.size}x{args.size} px, 2 objects, "
          f"tiny random SAM 2 at {args.image_size} px")
    print(f"{'run':28} {'total s':>8} {'start s':>8} {'stacks/h':>9} {'stacks/h after start':>21}")
    for r in rows:
        r["stacks_per_hour"] = args.stacks / r["seconds"] * 3600
        r["stacks_per_hour_running"] = args.stacks / (r["seconds"] - r["startup"]) * 3600
        print(f"{r['run']:28} {r['seconds']:8.1f} {r['startup']:8.1f} {r['stacks_per_hour']:9.0f} "
              f"{r['stacks_per_hour_running']:21.0f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "cores": cores, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
