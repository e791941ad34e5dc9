"""Per-object statistics: one CSV row per object per segmented frame.

Columns
-------
``frame``, ``object_id``, ``object_name``
    Where and what.
``area_px``, ``area``, ``area_unit``
    Pixels in the object's label on that frame, and the same area in physical units
    (pixel height x width, e.g. ``um^2``; ``px^2`` when the input has no calibration).
``centroid_row``, ``centroid_col``
    Centre of mass in pixels (empty when the object is absent).
``centroid_y``, ``centroid_x``
    The centre in physical coordinates: calibrated distance from pixel (0, 0), or map
    coordinates for a GeoTIFF.
``bbox_row0``, ``bbox_col0``, ``bbox_row1``, ``bbox_col1``
    Bounding box in pixels, end exclusive (numpy slicing).
``presence``, ``iou``
    SAM 2's object presence probability (below 0.5 SAM 2 thinks the object is absent) and
    predicted IoU of the mask, for judging where tracking may have failed.

The statistics describe the written labels (after overlaps are resolved), so they match what a
user measures on the label file.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from napari_sam2.io.readers import FrameGeometry

__all__ = ["ObjectStats", "STATS_COLUMNS", "measure_stack"]

#: ids up to this count in bins of their own value; higher ids (a 32-bit label image) by rank
_DIRECT_IDS = 2**20

STATS_COLUMNS = (
    "frame", "object_id", "object_name", "area_px", "area", "area_unit",
    "centroid_row", "centroid_col", "centroid_y", "centroid_x",
    "bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1", "presence", "iou",
)


class ObjectStats:
    """Accumulate per-frame, per-object measurements and write them as CSV.

    Parameters
    ----------
    geometry : FrameGeometry, optional
        Pixel size, unit and origin for the physical columns.
    names : dict[int, str], optional
        Object names for the ``object_name`` column.
    """

    def __init__(self, geometry: FrameGeometry | None = None, names: dict | None = None):
        self.geometry = geometry or FrameGeometry()
        self.names = dict(names or {})
        self.rows: list[dict] = []

    def add_frame(self, frame: int, labels: np.ndarray, obj_ids, scores: dict | None = None,
                  absent: bool = True) -> None:
        """Measure ``obj_ids`` in one frame's label image.

        Parameters
        ----------
        frame : int
            Frame index.
        labels : numpy.ndarray, (Y, X) int
            The frame's labels.
        obj_ids : iterable of int
            The objects tracked on this frame (one row each, area 0 when absent).
        scores : dict[int, ObjectScore or (presence, iou)], optional
            SAM 2's scores for the frame.
        absent : bool
            Whether an object absent from the frame gets a row (area 0); if False, only when
            ``scores`` has its score (SAM 2 tracked it there and found nothing).
        """
        from scipy import ndimage

        ids = sorted(int(i) for i in obj_ids)
        if not ids:
            return
        labels = np.asarray(labels)
        flat = labels.ravel()
        if ids[-1] <= _DIRECT_IDS:  # ids count directly (bins up to the highest id)
            slot = {obj: obj for obj in ids}
            top = ids[-1]
            # restrict to the ids measured: other values count as background
            index = np.where(flat <= top, flat, 0).astype(np.intp)
        else:  # large ids (up to 2**32 - 1): bins by rank, not by value
            known = np.asarray(ids, dtype=np.int64)
            pos = np.minimum(np.searchsorted(known, flat), len(ids) - 1)
            index = np.where(known[pos] == flat, pos + 1, 0).astype(np.intp)
            slot = {obj: k + 1 for k, obj in enumerate(ids)}
            top = len(ids)
        area = np.bincount(index, minlength=top + 1)
        rows, cols = np.arange(labels.shape[0])[:, None], np.arange(labels.shape[1])[None, :]
        sum_r = np.bincount(index, weights=np.broadcast_to(rows, labels.shape).ravel(), minlength=top + 1)
        sum_c = np.bincount(index, weights=np.broadcast_to(cols, labels.shape).ravel(), minlength=top + 1)
        boxes = ndimage.find_objects(index.reshape(labels.shape), max_label=top)
        g = self.geometry
        dy, dx = g.scale[1], g.scale[2]
        unit = g.units[1]
        area_unit = f"{unit}^2" if unit else "px^2"
        for obj in ids:
            n = int(area[slot[obj]])
            score = (scores or {}).get(obj)
            if not n and score is None and not absent:
                continue
            presence, iou = (float(score[0]), float(score[1])) if score is not None else (math.nan, math.nan)
            row = {
                "frame": int(frame), "object_id": obj, "object_name": self.names.get(obj, ""),
                "area_px": n, "area": n * g.pixel_area, "area_unit": area_unit,
                "centroid_row": "", "centroid_col": "", "centroid_y": "", "centroid_x": "",
                "bbox_row0": "", "bbox_col0": "", "bbox_row1": "", "bbox_col1": "",
                "presence": presence, "iou": iou,
            }
            if n:
                cr, cc = sum_r[slot[obj]] / n, sum_c[slot[obj]] / n
                box = boxes[slot[obj] - 1]
                row.update(
                    centroid_row=cr, centroid_col=cc,
                    centroid_y=g.origin[0] + cr * dy, centroid_x=g.origin[1] + cc * dx,
                    bbox_row0=box[0].start, bbox_col0=box[1].start,
                    bbox_row1=box[0].stop, bbox_col1=box[1].stop,
                )
            self.rows.append(row)

    def write_csv(self, path) -> Path:
        """Write the rows sorted by frame and object id; returns the path.

        The file is written under a temporary name and renamed when complete, so an existing
        file is replaced only by a complete one (see :mod:`napari_sam2.io.atomic`).
        """
        from napari_sam2.io.atomic import StagedOutput

        path = Path(path)
        rows = sorted(self.rows, key=lambda r: (r["frame"], r["object_id"]))
        with StagedOutput(path) as staged:
            with open(staged.temp, "w", newline="", encoding="utf-8") as fh:
                writer = csv.DictWriter(fh, fieldnames=STATS_COLUMNS)
                writer.writeheader()
                for r in rows:
                    writer.writerow({k: _fmt(v) for k, v in r.items()})
        return path


def measure_stack(labels, obj_ids, geometry: FrameGeometry | None = None, names: dict | None = None,
                  quality: dict | None = None) -> ObjectStats:
    """Statistics of a ``(T, Y, X)`` label stack, or of one ``(Y, X)`` image (frame 0).

    An object gets a row on each frame where it has pixels or SAM 2 scored it (tracked it
    there). ``quality``: ``{obj_id: (n_frames, 2) presence and IoU, NaN where not computed}``
    (:meth:`napari_sam2.Sam2Session.quality`). Reads one frame at a time.
    """
    stats = ObjectStats(geometry, names)
    ids = sorted(int(i) for i in obj_ids)
    planes = [labels] if np.ndim(labels) == 2 else labels
    for frame, plane in enumerate(planes):
        scores = {}
        for obj, q in (quality or {}).items():
            if frame < len(q) and not np.isnan(q[frame][0]):
                scores[int(obj)] = (float(q[frame][0]), float(q[frame][1]))
        stats.add_frame(frame, np.asarray(plane), ids, scores, absent=False)
    return stats


def _fmt(value):
    if isinstance(value, (float, np.floating)):
        value = float(value)
        # six decimals: enough for sub-pixel centroids without losing map coordinates' digits
        return "" if math.isnan(value) else repr(round(value, 6))
    return value
