"""float32 against bfloat16 autocast on one device: seconds per tracked frame and mask agreement.

One process builds the random-initialised network once and alternates a float32 and a bfloat16
session (``load_model(model, dtype="bfloat16")`` shares the weights) on the same frames, one
object seeded on frame 0, ``--rounds`` times; the best round of each is compared. On a CPU with
AMX (``amx_bf16`` in ``/proc/cpuinfo``) bfloat16 matrix products run on the AMX units.

Usage::

    python benchmarks/bench_precision.py --config tiny-1024 --frames 4
    python benchmarks/bench_precision.py --config small --frames 8
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _run(model, stack) -> tuple[float, list[np.ndarray]]:
    from setups import seeded_propagation

    seconds, labels = seeded_propagation(model, stack)
    return seconds, [frame > 0 for frame in labels]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="tiny-1024", help="small, tiny-1024 (see setups.py)")
    ap.add_argument("--frames", type=int, default=4, help="frames per run (frame 0 seeds)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    from bench_objects import GridStack
    from setups import alternate, build_model, machine_info

    from napari_sam2 import load_model

    print(machine_info(args.device))
    base = build_model(args.config, device=args.device)
    models = {"float32": base, "bfloat16": load_model(base, dtype="bfloat16")}
    side = 1024 if args.config.endswith("1024") else 256
    stack = GridStack(args.frames, side, 1)
    runs, best = alternate({name: partial(_run, model, stack) for name, model in models.items()},
                           args.rounds)
    ious = [float((a & b).sum() / max((a | b).sum(), 1))
            for a, b in zip(runs["float32"][0][1], runs["bfloat16"][0][1])]
    print(f"{args.config}: float32 {best['float32']:.3f} s, bfloat16 {best['bfloat16']:.3f} s per frame "
          f"({best['float32'] / best['bfloat16']:.2f}x); masks IoU {min(ious):.3f}-{max(ious):.3f}; "
          f"load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
