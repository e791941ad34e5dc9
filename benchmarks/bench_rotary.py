"""transformers' rotary encoding against the complex form ``load_model`` installs, in one process.

``load_model`` gives the memory attention's RoPE modules a copy of transformers' ``forward`` that
calls :class:`napari_sam2.engine.speed._ComplexRotary` (see ``speed.fast_rotary``). This script
loads one random-initialised network, seeds ``--objects`` objects on frame 0 from a label image
and propagates, alternating the two forms ``--rounds`` times (transformers' form is the class's
own ``forward``, reached by removing the instance's), and compares seconds per tracked frame and
the label images.

Usage::

    python benchmarks/bench_rotary.py --config tiny-1024 --objects 10 --frames 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def _run(model, stack) -> tuple[float, list[np.ndarray]]:
    from napari_sam2 import Sam2Session

    session = Sam2Session(model, stack)
    session.add_label_image(0, stack.labels(0))
    stamps, labels = [time.perf_counter()], []
    for frame, _ in session.propagate("forward"):
        stamps.append(time.perf_counter())
        labels.append(session.labels(frame))
    return float(np.median(np.diff(stamps)[1:])), labels  # frame 0 is the seeding


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="tiny-1024", help="small, tiny-1024, sam3-small (see setups.py)")
    ap.add_argument("--objects", type=int, default=10)
    ap.add_argument("--frames", type=int, default=4, help="frames per run (frame 0 seeds)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    from bench_objects import GridStack
    from setups import build_model, machine_info

    from napari_sam2 import load_model

    print(machine_info("cpu"))
    model = load_model(build_model(args.config).network, device="cpu")
    complex_forms = {m: m.__dict__["forward"] for m in model.network.modules() if "forward" in m.__dict__}
    print(f"{len(complex_forms)} attention modules use the complex form")
    if not complex_forms:
        return 1
    side = 1024 if args.config.endswith("1024") else 256
    stack = GridStack(args.frames, side, args.objects)
    runs: dict[str, list] = {"transformers": [], "complex": []}
    for r in range(args.rounds):
        for name in runs:
            for module, forward in complex_forms.items():
                if name == "complex":
                    module.forward = forward
                else:
                    del module.forward  # the class's own forward again
            runs[name].append(_run(model, stack))
            print(f"round {r}: {name:12s} {runs[name][-1][0]:.3f} s per frame, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    best = {name: min(t for t, _ in rs) for name, rs in runs.items()}
    same = all(np.array_equal(a, b) for a, b in zip(runs["transformers"][0][1], runs["complex"][0][1]))
    print(f"{args.config}, {args.objects} objects: transformers {best['transformers']:.3f} s, complex "
          f"{best['complex']:.3f} s per frame ({best['transformers'] / best['complex']:.2f}x); "
          f"label images {'identical' if same else 'DIFFERENT'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
