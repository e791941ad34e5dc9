"""Track cells through a fluorescence time-lapse with the Python API.

Clicks once on a few cells of the first frame, propagates through the movie, compares with the
ground truth of the synthetic sample, and saves the labels (ImageJ TIFF with the pixel size and
frame interval), per-object statistics and the session file (reload it in the napari widget, or
replay it with ``napari-sam2 segment``).

Run::

    python examples/segment_cells_api.py                       # downloads sam2.1-tiny once
    python examples/segment_cells_api.py --model /path/to/sam2.1_hiera_small.pt

The model may also be set with the ``NAPARI_SAM2_MODEL`` environment variable (a name, a
transformers folder or a Meta ``.pt`` checkpoint).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from napari_sam2 import Sam2Session, load_model
from napari_sam2.io.readers import FrameGeometry
from napari_sam2.io.session_file import SessionSettings, session_from_engine, write_session
from napari_sam2.io.stats import ObjectStats
from napari_sam2.io.writers import write_labels
from napari_sam2.samples import make_cells_timelapse


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.environ.get("NAPARI_SAM2_MODEL", "sam2.1-tiny"))
    parser.add_argument("--out-dir", default="napari-sam2-example-output", type=Path)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=256, help="frame side in pixels")
    parser.add_argument("--cells", type=int, default=3, help="cells to click on")
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)

    movie = make_cells_timelapse(n_frames=args.frames, shape=(args.size, args.size), seed=0)
    print(f"time-lapse: {movie.image.shape} {movie.image.dtype} (12-bit camera counts)")
    model = load_model(args.model)
    session = Sam2Session(model, movie.image)  # contrast: robust percentiles of the whole movie

    # one click in the middle of each cell on the first frame; the cell's ground-truth id is
    # used as the object id so the result can be compared with the truth below
    first = movie.labels[0]
    cell_ids = [i for i in np.unique(first) if i][: args.cells]
    for cell_id in cell_ids:
        rows, cols = np.nonzero(first == cell_id)
        session.add_points(0, int(cell_id), [[rows.mean(), cols.mean()]], [1])

    labels = np.zeros(movie.image.shape, np.uint16)
    scores = {}
    for frame, masks in session.propagate(direction="forward"):
        for obj_id in sorted(masks):  # higher ids win overlaps, as in the widget and the CLI
            labels[frame][masks[obj_id]] = obj_id
        scores[frame] = masks.scores

    for cell_id in cell_ids:
        truth, found = movie.labels == cell_id, labels == cell_id
        dice = 2 * (truth & found).sum() / max(1, truth.sum() + found.sum())
        print(f"cell {cell_id}: Dice with the ground truth {dice:.2f}")

    geometry = FrameGeometry(axis_name="T", scale=(5.0, 0.65, 0.65), units=("min", "µm"))
    write_labels(args.out_dir / "cells_labels.tif", labels, geometry)
    stats = ObjectStats(geometry, names={int(i): f"cell {i}" for i in cell_ids})
    for frame, frame_scores in scores.items():
        stats.add_frame(frame, labels[frame], frame_scores.keys(), frame_scores)
    stats.write_csv(args.out_dir / "cells_stats.csv")
    settings = SessionSettings(model=str(args.model), axis=0)
    write_session(args.out_dir / "cells_session.json", session_from_engine(session, settings))
    print(f"wrote cells_labels.tif, cells_stats.csv and cells_session.json to {args.out_dir}")
    return labels


if __name__ == "__main__":
    main()
