"""Benchmark ``Sam2Session.segment_everything``: seconds per frame of automatic mask generation.

For each configuration and grid size it times, on one generated frame:

* the image encoder (once per frame; shared with tracking through the feature cache);
* the grid of point prompts through the prompt encoder and mask decoder, with the default
  filters (random weights: almost no mask passes them, so this is the decoder's cost alone);
* the same with every filter open (``pred_iou_thresh=0``, ``stability_score_thresh=0``,
  ``box_nms_thresh=1``): every candidate is upsampled, scored, cleaned and painted, the most
  post-processing a trained network can cause;

and the peak RSS of the process. Each time is given as wall-clock seconds and as the process's
CPU seconds divided by the torch threads: on a shared machine under load the wall time grows
with the load, the CPU time much less, so the second is the better estimate of a quiet machine.
Weights are random (nothing can be downloaded); speed does not depend on their values, only the
number of masks that pass the filters does.

Usage::

    python benchmarks/bench_everything.py                          # tiny-1024, 8 and 16 points per side
    python benchmarks/bench_everything.py --points 32              # Meta's default grid (long on a CPU)
    python benchmarks/bench_everything.py --config small --points 8 16 32

It prints a table and writes the figures to ``benchmarks/results/everything-*.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from setups import GeneratedStack, build_model, load_average, machine_info  # noqa: E402

OPEN = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "box_nms_thresh": 1.0}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(config: str, points: list[int], device: str, open_filters: bool) -> list[dict]:
    import torch

    from napari_sam2.engine.session import Sam2Session

    model = build_model(config, device)
    threads = torch.get_num_threads() if device == "cpu" else 1
    side = model.image_size
    rows = []
    for k, pps in enumerate(points):
        # a new frame per grid: the encoder is timed on a frame it has not seen
        stack = GeneratedStack(len(points), side=side)
        session = Sam2Session(model, stack)
        frame = k
        t0, c0 = time.perf_counter(), time.process_time()
        with model.inference():
            from napari_sam2.engine.everything import frame_features

            frame_features(model, session.cache, session._frames, frame)
        if device == "cuda":
            torch.cuda.synchronize()
        encode, encode_cpu = time.perf_counter() - t0, (time.process_time() - c0) / threads
        t0, c0 = time.perf_counter(), time.process_time()
        labels = session.segment_everything(frame, points_per_side=pps)
        if device == "cuda":
            torch.cuda.synchronize()
        decode, decode_cpu = time.perf_counter() - t0, (time.process_time() - c0) / threads
        row = {"config": config, "image_size": side, "points_per_side": pps, "points": pps * pps,
               "encoder_s": round(encode, 3), "grid_default_filters_s": round(decode, 3),
               "objects_default_filters": int(labels.max()),
               "per_point_ms": round(1000 * decode / (pps * pps), 2),
               "frame_s": round(encode + decode, 3),
               "encoder_cpu_s": round(encode_cpu, 3), "grid_default_filters_cpu_s": round(decode_cpu, 3),
               "frame_cpu_s": round(encode_cpu + decode_cpu, 3)}
        if open_filters:
            t0, c0 = time.perf_counter(), time.process_time()
            labels = session.segment_everything(frame, points_per_side=pps, **OPEN)
            row["grid_open_filters_s"] = round(time.perf_counter() - t0, 3)
            row["frame_open_filters_cpu_s"] = round(encode_cpu + (time.process_time() - c0) / threads, 3)
            row["objects_open_filters"] = int(labels.max())
            row["frame_open_filters_s"] = round(encode + row["grid_open_filters_s"], 3)
        row["peak_rss_mib"] = round(_peak_rss_mib(), 1)
        row["load_average"] = load_average()
        rows.append(row)
        print(_line(row), flush=True)
        del session, labels
    return rows


def _line(r: dict) -> str:
    text = (f"{r['config']:>10} {r['points_per_side']:>3}x{r['points_per_side']:<3} "
            f"encoder {r['encoder_s']:7.2f} s  grid {r['grid_default_filters_s']:8.2f} s "
            f"({r['per_point_ms']:.0f} ms/point)  frame {r['frame_s']:8.2f} s (CPU {r['frame_cpu_s']:.2f} s)")
    if "grid_open_filters_s" in r:
        text += (f"  | all masks pass: frame {r['frame_open_filters_s']:8.2f} s "
                 f"(CPU {r['frame_open_filters_cpu_s']:.2f} s), {r['objects_open_filters']} objects")
    return text + f"  | peak RSS {r['peak_rss_mib']:.0f} MiB, load {r['load_average']}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="tiny-1024", help="small | tiny-1024 (default) | <size>-1024")
    parser.add_argument("--points", type=int, nargs="+", default=[8, 16],
                        help="points per side (default 8 16)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-open", action="store_true", help="skip the run with every filter open")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on a CPU (default 2)")
    args = parser.parse_args(argv)
    import torch

    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    info = machine_info(args.device)
    print(json.dumps(info), flush=True)
    rows = run(args.config, args.points, args.device, not args.no_open)
    info["load_average_end"] = load_average()
    out = HERE / "results" / f"everything-{args.device}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": info, "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
