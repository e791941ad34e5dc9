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
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default="tiny-1024", help="small, tiny-1024, sam3-small (see setups.py)")
    ap.add_argument("--objects", type=int, default=10)
    ap.add_argument("--frames", type=int, default=4, help="frames per run (frame 0 seeds)")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args(argv)
    from bench_objects import GridStack
    from setups import alternate, build_model, machine_info, seeded_propagation

    from napari_sam2 import load_model

    print(machine_info("cpu"))
    model = load_model(build_model(args.config).network, device="cpu")
    complex_forms = {m: m.__dict__["forward"] for m in model.network.modules() if "forward" in m.__dict__}
    print(f"{len(complex_forms)} attention modules use the complex form")
    if not complex_forms:
        return 1
    side = 1024 if args.config.endswith("1024") else 256
    stack = GridStack(args.frames, side, args.objects)

    def arm(form: str):
        def run():
            for module, forward in complex_forms.items():
                if form == "complex":
                    module.forward = forward
                else:
                    del module.forward  # the class's own forward again
            return seeded_propagation(model, stack)
        return run

    runs, best = alternate({form: arm(form) for form in ("transformers", "complex")}, args.rounds)
    pairs = zip(runs["transformers"][0][1], runs["complex"][0][1])
    same = all(np.array_equal(a, b) for a, b in pairs)
    summary = {form: f"{seconds:.3f} s per frame" for form, seconds in best.items()}
    summary["complex / transformers speed"] = f"{best['transformers'] / best['complex']:.2f}x"
    summary["label images"] = "identical" if same else "DIFFERENT"
    print(f"{args.config}, {args.objects} objects, best of {args.rounds}:", summary)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
