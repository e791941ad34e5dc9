"""Segment an organ and a bone through a CT-like volume with the ``napari-sam2`` command.

1. Saves the synthetic CT phantom as an ImageJ TIFF with its voxel size (2.5 x 0.8 x 0.8 mm).
2. Writes a session file by hand: a box around the organ on the middle slice, and the bone's
   outline on the same slice as a mask prompt (as if it came from a threshold or another tool).
3. Runs::

       napari-sam2 segment ct.tif --prompts ct_session.json --out ct_labels.tif --stats ct_stats.csv

   which tracks both objects up and down the slices (SAM 2's "video" axis is z here).
4. Reads the labels back and prints each object's volume in mm^3 from the voxel size kept in
   the TIFF.

Run::

    python examples/segment_volume_cli.py [--model sam2.1-tiny|FOLDER|FILE.pt] [--out-dir DIR]

or set ``NAPARI_SAM2_MODEL``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import tifffile

from napari_sam2.samples import make_organ_volume


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("NAPARI_SAM2_MODEL", "sam2.1-tiny"))
    parser.add_argument("--out-dir", default="napari-sam2-example-output", type=Path)
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 128, 128), metavar=("Z", "Y", "X"))
    args = parser.parse_args(argv)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)

    # 1. the volume, with its voxel size in the ImageJ metadata
    ct = make_organ_volume(shape=tuple(args.shape))
    dz, dy, dx = ct.spacing
    tifffile.imwrite(out / "ct.tif", ct.image, imagej=True, resolution=(1 / dx, 1 / dy),
                     metadata={"axes": "ZYX", "spacing": dz, "unit": "mm"})

    # 2. prompts on the middle slice: a box around the organ (1), the bone's mask (3)
    mid = ct.image.shape[0] // 2
    rows, cols = np.nonzero(ct.labels[mid] == 1)
    (out / "ct_masks").mkdir(exist_ok=True)
    tifffile.imwrite(out / "ct_masks" / "bone.tif", (ct.labels[mid] == 3).astype(np.uint8) * 255)
    session = {
        "format": "napari-sam2-session", "version": 1,
        # the stack is int16 Hounsfield units: a soft-tissue window shows the organ best
        "settings": {"contrast": [-135, 215]},
        "objects": [
            {"id": 1, "name": "organ", "prompts": [
                {"frame": mid,
                 "box": [[int(rows.min()), int(cols.min())], [int(rows.max()), int(cols.max())]]}]},
            {"id": 3, "name": "bone", "prompts": [{"frame": mid, "mask": "ct_masks/bone.tif"}]},
        ],
    }
    (out / "ct_session.json").write_text(json.dumps(session, indent=1))

    # 3. the command line (``napari-sam2`` once installed; the module form works everywhere)
    cmd = [sys.executable, "-m", "napari_sam2.cli", "segment", "ct.tif", "--prompts", "ct_session.json",
           "--out", "ct_labels.tif", "--stats", "ct_stats.csv", "--model", str(args.model)]
    print("$ napari-sam2 " + " ".join(cmd[3:]))
    subprocess.run(cmd, cwd=out, check=True)

    # 4. volumes from the labels and the voxel size stored with them
    with tifffile.TiffFile(out / "ct_labels.tif") as tif:
        labels = tif.asarray()
        spacing = tif.imagej_metadata["spacing"]
        px = 1 / tif.pages[0].get_resolution()[0]
    voxel = spacing * px * px
    for obj_id, name in ((1, "organ"), (3, "bone")):
        found, truth = labels == obj_id, ct.labels == obj_id
        dice = 2 * (found & truth).sum() / max(1, found.sum() + truth.sum())
        print(f"{name}: {found.sum() * voxel / 1000:.1f} cm^3 (truth {truth.sum() * voxel / 1000:.1f} cm^3), "
              f"Dice {dice:.2f}")
    return labels


if __name__ == "__main__":
    main()
