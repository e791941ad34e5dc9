"""Side by side with Meta's own SAM 2 predictor: the same random weights, the same frames, one run.

Meta's ``SAM2VideoPredictor`` (PyPI ``sam2`` 1.1.0) needs torchvision, which does not load beside
the CPU torch this project is tested with, so it runs in its own virtual environment (recipe in
docs/performance.md) as a subprocess of this script. The script:

1. builds tiny SAM 2.1 (or another Meta config) with random weights in Meta's environment and
   saves it as a Meta-format ``.pt`` checkpoint, which ``napari_sam2.load_model`` loads here;
2. writes synthetic frames (``k`` bright blobs drifting on noise) as JPEG (Meta's predictor reads
   only JPEG folders or videos) and gives this engine the same decoded pixels;
3. alternates Meta's predictor and this engine, ``--rounds`` times each, so that both see the same
   machine load: one positive click per object on frame 0, then forward propagation.

Figures: seconds per propagated frame (median, frame 0 excluded), the latency of the first click
from a fresh session (Meta's ``init_state``, which reads the frames and encodes frame 0, plus the
click; here the session plus the click) and of a second click on the same frame (features
cached), and the IoU
of the two sides' masks (the same network: they differ only by resizing and float rounding).

Usage::

    python benchmarks/bench_meta.py --meta-python ~/meta-sam2/bin/python --objects 1,10 --frames 4
    python benchmarks/bench_meta.py --objects 1,10 --ours-bf16   # also ours in bfloat16 (AMX CPUs)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
META_CONFIGS = {
    "tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "large": "configs/sam2.1/sam2.1_hiera_l.yaml",
}


# ----------------------------------------------------------------------------- shared
def blob_centres(k: int, side: int, t: int) -> list[tuple[int, int]]:
    """``(row, col)`` centres of ``k`` blobs on a grid on frame ``t`` (they drift a little)."""
    grid = int(np.ceil(np.sqrt(k)))
    cell = side // grid
    out = []
    for i in range(k):
        gy, gx = divmod(i, grid)
        out.append((gy * cell + cell // 2 + int(round(3 * np.sin(t / 4 + i))),
                    gx * cell + cell // 2 + int(round(3 * np.cos(t / 4 + i)))))
    return out


def write_frames(folder: Path, n: int, side: int, k: int) -> list[Path]:
    """``n`` frames of ``k`` blobs as JPEG (quality 95), named as Meta's loader wants (00000.jpg)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    r = max(4, side // (3 * int(np.ceil(np.sqrt(k)))))
    yy, xx = np.mgrid[:side, :side]
    paths = []
    for t in range(n):
        img = (rng.random((side, side)) * 60).astype(np.float32)
        for cy, cx in blob_centres(k, side, t):
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = 210
        rgb = np.repeat(img.astype(np.uint8)[..., None], 3, axis=-1)
        p = folder / f"{t:05d}.jpg"
        Image.fromarray(rgb).save(p, quality=95)
        paths.append(p)
    return paths


# ----------------------------------------------------------------------------- Meta's side
def meta_worker(spec: dict) -> dict:
    """Runs in Meta's environment: build/save the weights, or run the predictor once."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    torch.set_num_threads(spec["threads"])
    if spec["task"] == "build":
        torch.manual_seed(0)
        pred = build_sam2_video_predictor(spec["config"], ckpt_path=None, device="cpu")
        torch.save({"model": pred.state_dict()}, spec["checkpoint"])
        return {"saved": spec["checkpoint"]}
    pred = build_sam2_video_predictor(spec["config"], ckpt_path=None, device="cpu")
    state = torch.load(spec["checkpoint"], map_location="cpu", weights_only=True)["model"]
    pred.load_state_dict(state)
    pred.eval()
    centres = blob_centres(spec["objects"], spec["side"], 0)
    with torch.inference_mode():
        t0 = time.perf_counter()
        # init_state reads every frame and runs the image encoder on frame 0
        state = pred.init_state(video_path=spec["frames_dir"])
        r, c = centres[0]
        pred.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[c, r]], labels=[1])
        first_click = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=[[c + 1, r + 1]], labels=[1],
                                   clear_old_points=True)
        second_click = time.perf_counter() - t0
        for i, (r, c) in enumerate(centres[1:], start=2):
            pred.add_new_points_or_box(state, frame_idx=0, obj_id=i, points=[[c, r]], labels=[1])
        masks, stamps = {}, []
        t0 = time.perf_counter()
        for frame, obj_ids, logits in pred.propagate_in_video(state):
            stamps.append(time.perf_counter())
            masks[int(frame)] = {int(o): (logits[j, 0] > 0).numpy() for j, o in enumerate(obj_ids)}
    np.savez_compressed(spec["masks_out"], **{f"{f}_{o}": m for f, d in masks.items() for o, m in d.items()})
    per_frame = np.diff([t0] + stamps)[1:]
    return {"s_per_frame": float(np.median(per_frame)), "first_click_s": first_click,
            "second_click_s": second_click}


# ----------------------------------------------------------------------------- this engine
def ours(spec: dict, paths: list[Path]) -> tuple[dict, dict]:
    """Run this engine once on the same decoded JPEG pixels and weights."""
    import torch
    from PIL import Image

    from napari_sam2 import Sam2Session, load_model

    torch.set_num_threads(spec["threads"])
    model = load_model(spec["checkpoint"], device="cpu", dtype=spec.get("dtype"))
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    centres = blob_centres(spec["objects"], spec["side"], 0)
    t0 = time.perf_counter()
    session = Sam2Session(model, frames, rgb=True, contrast=(0, 255))
    session.add_points(0, 1, [centres[0]], [1])
    first_click = time.perf_counter() - t0
    t0 = time.perf_counter()
    session.add_points(0, 1, [(centres[0][0] + 1, centres[0][1] + 1)], [1], replace=True)
    second_click = time.perf_counter() - t0
    for i, rc in enumerate(centres[1:], start=2):
        session.add_points(0, i, [rc], [1])
    masks, stamps = {}, []
    t0 = time.perf_counter()
    for frame, frame_masks in session.propagate("forward"):
        stamps.append(time.perf_counter())
        masks[int(frame)] = {int(o): np.asarray(m) for o, m in frame_masks.items()}
    per_frame = np.diff([t0] + stamps)[1:]
    return ({"s_per_frame": float(np.median(per_frame)), "first_click_s": first_click,
             "second_click_s": second_click}, masks)


def mean_iou(meta_npz: Path, masks: dict) -> float:
    """Mean IoU of the two sides' masks over every (frame, object)."""
    data = np.load(meta_npz)
    ious = []
    for key in data.files:
        f, o = (int(x) for x in key.split("_"))
        a, b = data[key], masks.get(f, {}).get(o)
        if b is None:
            continue
        union = np.logical_or(a, b).sum()
        ious.append(1.0 if union == 0 else np.logical_and(a, b).sum() / union)
    return float(np.mean(ious)) if ious else float("nan")


def run_meta(python: str, spec: dict) -> dict:
    out = subprocess.run([python, str(Path(__file__).resolve()), "--meta-worker", json.dumps(spec)],
                         capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ""})
    if out.returncode:
        raise SystemExit(f"Meta's predictor failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--meta-python", default=str(Path.home() / "meta-sam2/bin/python"),
                    help="the Python of the environment where Meta's sam2 1.1.0 is installed")
    ap.add_argument("--model", default="tiny", choices=sorted(META_CONFIGS))
    ap.add_argument("--objects", default="1,10")
    ap.add_argument("--frames", type=int, default=4, help="frames (frame 0 is prompted)")
    ap.add_argument("--side", type=int, default=512, help="frame size in pixels")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ours-bf16", action="store_true",
                    help="also run this engine with dtype='bfloat16' (CPU autocast; Meta's predictor "
                         "has no such setting) in each round")
    ap.add_argument("--meta-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.meta_worker:
        print(json.dumps(meta_worker(json.loads(args.meta_worker))))
        return 0

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(HERE.parent))
    from setups import machine_info

    print(json.dumps(machine_info("cpu")))
    tmp = Path(tempfile.mkdtemp(prefix="bench-meta-"))
    ckpt = tmp / f"sam2.1_hiera_{args.model}_random.pt"
    base = {"config": META_CONFIGS[args.model], "checkpoint": str(ckpt), "threads": args.threads}
    run_meta(args.meta_python, {**base, "task": "build"})
    rows = []
    for k in (int(x) for x in args.objects.split(",")):
        folder = tmp / f"frames-{k}"
        folder.mkdir()
        paths = write_frames(folder, args.frames, args.side, k)
        spec = {**base, "task": "run", "objects": k, "side": args.side, "frames_dir": str(folder),
                "masks_out": str(tmp / f"meta-{k}.npz")}
        for rnd in range(args.rounds):
            m = run_meta(args.meta_python, spec)
            o, masks = ours(spec, paths)
            iou = mean_iou(Path(spec["masks_out"]), masks)
            load = os.getloadavg()[0]
            rows.append({"objects": k, "round": rnd, "meta": m, "ours": o, "mask_iou": iou, "load": load})
            print(f"{args.model:5s} {k:3d} objects round {rnd}: s/frame Meta {m['s_per_frame']:.3f} "
                  f"ours {o['s_per_frame']:.3f} ({m['s_per_frame'] / o['s_per_frame']:.2f}x) | first click "
                  f"Meta {m['first_click_s']:.3f} ours {o['first_click_s']:.3f} | second click Meta "
                  f"{m['second_click_s']:.3f} ours {o['second_click_s']:.3f} | mask IoU {iou:.3f} | "
                  f"load {load:.1f}", flush=True)
            if args.ours_bf16:
                b, bf16_masks = ours({**spec, "dtype": "bfloat16"}, paths)
                rows[-1].update(ours_bf16=b, mask_iou_bf16=mean_iou(Path(spec["masks_out"]), bf16_masks))
                print(f"{args.model:5s} {k:3d} objects round {rnd}: s/frame ours in bfloat16 "
                      f"{b['s_per_frame']:.3f} ({m['s_per_frame'] / b['s_per_frame']:.2f}x Meta's float32) | "
                      f"first click {b['first_click_s']:.3f} | mask IoU with Meta's "
                      f"{rows[-1]['mask_iou_bf16']:.3f}", flush=True)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    out = results / f"meta-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"machine": machine_info("cpu"), "args": vars(args), "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
