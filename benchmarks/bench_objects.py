"""Many objects: batched tracking against one object at a time, seconds per frame and peak RSS.

Every run seeds ``n`` objects on frame 0 from an instance label image (``add_label_image``, as
a Cellpose result would) and propagates them forward; each (configuration, objects, mode) runs
in a fresh subprocess so that its peak RSS is its own. Also measured: the time to seed the
objects, the tracking state kept per object, and the RSS of a longer run.

Usage::

    python benchmarks/bench_objects.py --configs small --objects 1,10,50,100
    python benchmarks/bench_objects.py --configs tiny-1024 --objects 1,10 --frames 2
    python benchmarks/bench_objects.py --configs small --objects 100 --frames 1000 --modes batched \
        --rss-every 50
    python benchmarks/bench_objects.py --configs small --objects 50 --dtype bfloat16   # autocast

Seconds per frame exclude frame 0 (the seeding) but include the image encoder (the same work in
both modes); they are the median over the frames tracked once the memory bank is full (from
frame 7, SAM 2's ``num_maskmem``: earlier frames attend to fewer memories and run faster), or
over every frame of a shorter run, which the line then says. The machine and its load average
are printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


class GridStack:
    """``(n, side, side)`` uint8 frames of ``k`` bright blobs on a grid, drifting a little."""

    def __init__(self, n_frames: int, side: int, k: int):
        self.shape, self.dtype, self.ndim = (n_frames, side, side), np.dtype(np.uint8), 3
        self.k, self.side = k, side
        self.grid = int(np.ceil(np.sqrt(k)))
        self.cell = side // self.grid
        self.noise = (np.random.default_rng(0).random((side, side)) * 50).astype(np.uint8)

    def boxes(self, t: int):
        r = max(2, self.cell // 3)
        for i in range(self.k):
            gy, gx = divmod(i, self.grid)
            cy = gy * self.cell + self.cell // 2 + int(round(2 * np.sin(t / 5 + i)))
            cx = gx * self.cell + self.cell // 2 + int(round(2 * np.cos(t / 5 + i)))
            yield i, slice(max(cy - r, 0), cy + r), slice(max(cx - r, 0), cx + r)

    def labels(self, t: int = 0) -> np.ndarray:
        lab = np.zeros(self.shape[1:], np.uint32)
        for i, ys, xs in self.boxes(t):
            lab[ys, xs] = 100 + 3 * i  # arbitrary ids, as a segmentation tool gives
        return lab

    def __getitem__(self, t):
        frame = self.noise.copy()
        for _, ys, xs in self.boxes(int(t)):
            frame[ys, xs] = 200
        return frame


def _state_bytes(session, obj_id: int) -> int:
    """Bytes of tracking state an object holds (tensors counted once, records, masks)."""
    import torch

    obj = session._objects[obj_id]
    seen, total = set(), 0

    def add(x):
        nonlocal total
        if isinstance(x, torch.Tensor):
            # a slice of a batch counts for its own elements
            key = (x.untyped_storage().data_ptr(), x.storage_offset(), x.numel())
            if key not in seen:
                seen.add(key)
                total += x.numel() * x.element_size()
        elif isinstance(x, dict):
            for v in x.values():
                add(v)
        elif isinstance(x, np.ndarray) or hasattr(x, "nbytes"):  # arrays, MaskBits records
            total += x.nbytes

    for store in (obj.cond, obj.non_cond, obj.points, obj.masks, obj.binary, obj.exact_masks):
        for v in store.values():
            add(v)
    return total + obj.quality.nbytes


def _rss_mib() -> float:
    """The process's resident memory now (Linux), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def worker(spec: dict) -> dict:
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    from setups import build_model

    from napari_sam2 import Sam2Session, load_model
    from napari_sam2.engine.heap import HeapTrimmer

    # as load_model prepares a network for users (its shortcuts, the autocast precision)
    model = load_model(build_model(spec["config"]).network, device="cpu", dtype=spec.get("dtype"))
    if spec.get("plain"):  # transformers' own forwards, for comparison
        from napari_sam2.engine.speed import plain_rotary

        plain_rotary(model.network)
    side = 1024 if spec["config"].endswith("1024") else 128 if spec["config"].endswith("128") else 256
    stack = GridStack(spec["frames"], side, spec["objects"])
    session = Sam2Session(model, stack, batch_objects=spec["mode"] == "batched",
                          max_batch=spec.get("max_batch"))
    t0 = time.perf_counter()
    ids = session.add_label_image(0, stack.labels(0))
    seed_s = time.perf_counter() - t0
    stamps = []
    t0 = time.perf_counter()
    every = int(spec.get("rss_every") or 0)
    for frame, masks in session.propagate("forward"):
        stamps.append(time.perf_counter())
        assert len(masks) == len(ids)
        if every and (frame + 1) % every == 0:  # a long run reports as it goes (stderr)
            rss, trimmed = _rss_mib(), ""
            if spec.get("trim"):  # what the heap holds free vs what is in use
                HeapTrimmer().now()
                trimmed = f" ({_rss_mib():.0f} MiB after malloc_trim)"
            print(f"  frame {frame + 1}: RSS {rss:.0f} MiB{trimmed}, peak "
                  f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB, "
                  f"{stamps[-1] - t0:.0f} s, load {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    per_frame = np.diff([t0] + stamps)[1:]  # frame 0 is the prompt: nothing tracked
    # Until frame num_maskmem the memory bank is still filling: fewer memories to attend to, so
    # early frames are cheaper. The figure is the median once it is full, where there are such.
    full = int(getattr(model.network.config, "num_maskmem", 7))
    steady = per_frame[full - 1:] if len(per_frame) >= full else per_frame
    state = [_state_bytes(session, i) for i in ids]
    return {
        **spec,
        "seed_s": seed_s,
        "s_per_frame": float(np.median(steady)) if len(steady) else float("nan"),
        "memory_full": len(per_frame) >= full,
        "early_s_per_frame": float(np.median(per_frame[:full - 1])) if len(per_frame) else float("nan"),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "state_kib_per_object": float(np.mean(state)) / 1024,
        "max_batch": session.max_batch,
        "load_average": os.getloadavg()[0],
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="small",
                    help="small, small-128, tiny-1024, edgetam-1024, ... (setups.py; comma-separated)")
    ap.add_argument("--objects", default="1,10,50,100")
    ap.add_argument("--frames", type=int, default=10,
                    help="frames per run (frame 0 seeds; from frame 7 the memory bank is full)")
    ap.add_argument("--modes", default="batched,one-at-a-time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-batch", type=int, default=None, help="objects per batch (default: the engine's)")
    ap.add_argument("--dtype", default=None, help="autocast precision, e.g. bfloat16 (default float32)")
    ap.add_argument("--plain", action="store_true",
                    help="transformers' own forwards (without the shortcuts load_model installs)")
    ap.add_argument("--rss-every", type=int, default=0, help="print the RSS every N frames (long runs)")
    ap.add_argument("--trim", action="store_true",
                    help="with --rss-every: also the RSS after glibc's malloc_trim (free heap vs in use)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    from setups import machine_info

    print(json.dumps(machine_info("cpu")))
    rows = []
    for config in args.configs.split(","):
        for n in [int(x) for x in args.objects.split(",")]:
            for mode in args.modes.split(","):
                spec = {"config": config, "objects": n, "mode": mode, "frames": args.frames,
                        "threads": args.threads, "rss_every": args.rss_every, "trim": args.trim,
                        "dtype": args.dtype, "max_batch": args.max_batch, "plain": args.plain}
                out = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)],
                                     stdout=subprocess.PIPE, text=True, check=True)  # stderr: live
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                full = "" if row["memory_full"] else " (memory bank not yet full: --frames 10)"
                print(f"{config:10s} {n:4d} objects {mode:14s} {row['s_per_frame']:8.3f} s/frame{full}  "
                      f"seed {row['seed_s']:6.2f} s  peak RSS {row['peak_rss_mib']:7.0f} MiB  "
                      f"state {row['state_kib_per_object']:7.0f} KiB/object  load {row['load_average']:.1f}",
                      flush=True)
    for config in args.configs.split(","):
        for n in [int(x) for x in args.objects.split(",")]:
            pair = {r["mode"]: r for r in rows if r["config"] == config and r["objects"] == n}
            if {"batched", "one-at-a-time"} <= set(pair):
                speedup = pair["one-at-a-time"]["s_per_frame"] / pair["batched"]["s_per_frame"]
                print(f"{config:10s} {n:4d} objects: batched {speedup:.2f}x the speed of one at a time")
    return 0


if __name__ == "__main__":
    sys.exit(main())
