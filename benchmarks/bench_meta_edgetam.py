"""Meta's own EdgeTAM predictor and this engine: the same random ``edgetam.pt``, the same frames.

Meta's EdgeTAM code (github.com/facebookresearch/EdgeTAM, a fork of SAM 2 whose package is also
called ``sam2``) needs timm and torchvision, so it runs in the environment of Meta's SAM 2
predictor (docs/performance.md) with the EdgeTAM checkout first on ``PYTHONPATH``; this engine
runs in an environment where timm imports too (EdgeTAM's encoder is timm's RepViT), e.g. the
same one with ``transformers timm`` installed and this project on ``PYTHONPATH``. The script:

1. builds EdgeTAM with random weights in Meta's code (timm asked for no pretrained weights) and
   saves it as Meta's ``{"model": state_dict}``, which ``napari_sam2.load_model`` reads;
2. writes frames of drifting blobs as JPEG (Meta's predictor reads JPEG folders) and gives this
   engine the same decoded pixels;
3. clicks each object on frame 0 on both sides, propagates forward, and prints seconds per frame
   and the mean IoU of the two sides' masks.

Usage::

    PYTHONPATH=. ~/meta-sam2/bin/python benchmarks/bench_meta_edgetam.py --edgetam ~/EdgeTAM

(Meta's predictor fails on the CPU with more than one object: ``perceiver.py`` ``forward_2d``.)
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
sys.path.insert(0, str(HERE))
from bench_meta import blob_centres, mean_iou, write_frames  # noqa: E402


def meta_worker(spec: dict) -> dict:
    """Runs with EdgeTAM's ``sam2`` first on the path: build and save, or run the predictor."""
    import timm.models
    import torch

    create = timm.models.create_model

    def offline(name, pretrained=False, **kwargs):  # EdgeTAM's code asks for pretrained weights
        return create(name, pretrained=False, **kwargs)

    import sam2.modeling.backbones.timm as backbones

    backbones.create_model = offline
    from sam2.build_sam import build_sam2_video_predictor

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    pred = build_sam2_video_predictor("configs/edgetam.yaml", ckpt_path=None, device="cpu")
    if spec["task"] == "build":
        with torch.no_grad():  # objects present (random weights say "absent" half the time)
            pred.sam_mask_decoder.pred_obj_score_head.layers[-1].bias += 3.0
        torch.save({"model": pred.state_dict()}, spec["checkpoint"])
        return {"saved": spec["checkpoint"]}
    pred.load_state_dict(torch.load(spec["checkpoint"], map_location="cpu", weights_only=True)["model"])
    pred.eval()
    with torch.inference_mode():
        state = pred.init_state(video_path=spec["frames_dir"])
        for i, (r, c) in enumerate(spec["centres"], start=1):
            pred.add_new_points_or_box(state, frame_idx=0, obj_id=i, points=[[c, r]], labels=[1])
        masks, stamps, t0 = {}, [], time.perf_counter()
        for frame, obj_ids, logits in pred.propagate_in_video(state):
            stamps.append(time.perf_counter())
            for j, o in enumerate(obj_ids):
                masks[f"{int(frame)}_{int(o)}"] = (logits[j, 0] > 0).numpy()
    np.savez_compressed(spec["masks_out"], **masks)
    return {"s_per_frame": float(np.median(np.diff([t0] + stamps)[1:]))}


def run_meta(edgetam: str, spec: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--meta-worker", json.dumps(spec)], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": edgetam})
    if out.returncode:
        raise SystemExit(f"Meta's EdgeTAM failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--edgetam", help="a checkout of facebookresearch/EdgeTAM")
    ap.add_argument("--objects", type=int, default=1)
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--side", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--meta-worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.meta_worker:
        print(json.dumps(meta_worker(json.loads(args.meta_worker))))
        return 0
    if not args.edgetam:
        ap.error("--edgetam (a checkout of facebookresearch/EdgeTAM) is required")
    import torch
    from PIL import Image

    from napari_sam2 import Sam2Session, load_model

    tmp = Path(tempfile.mkdtemp())
    base = {"threads": args.threads, "checkpoint": str(tmp / "edgetam.pt")}
    run_meta(args.edgetam, {**base, "task": "build"})
    paths = write_frames(tmp, args.frames, args.side, args.objects)
    centres = [list(c) for c in blob_centres(args.objects, args.side, 0)]
    meta = run_meta(args.edgetam, {**base, "task": "run", "frames_dir": str(tmp), "centres": centres,
                                   "masks_out": str(tmp / "meta.npz")})
    torch.set_num_threads(args.threads)
    model = load_model(base["checkpoint"], device="cpu")
    frames = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    session = Sam2Session(model, frames, rgb=True, contrast=(0, 255))
    for i, rc in enumerate(centres, start=1):
        session.add_points(0, i, [rc], [1])
    masks, stamps, t0 = {}, [], time.perf_counter()
    for frame, frame_masks in session.propagate("forward"):
        stamps.append(time.perf_counter())
        masks[int(frame)] = {int(o): np.asarray(m) for o, m in frame_masks.items()}
    ours = float(np.median(np.diff([t0] + stamps)[1:]))
    print(f"{args.objects} object(s), {args.frames} frames of {args.side} px: Meta's EdgeTAM "
          f"{meta['s_per_frame']:.2f} s/frame, this engine {ours:.2f} s/frame; mean mask IoU "
          f"{mean_iou(tmp / 'meta.npz', masks):.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
