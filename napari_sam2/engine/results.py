"""What a session gives back for a frame: each object's mask and score, and the frame's labels.

Nothing here imports torch: the results are numpy arrays and plain numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

import numpy as np

__all__ = ["ObjectScore", "FrameMasks", "compose_labels"]


class ObjectScore(NamedTuple):
    """Quality of one object's mask on one frame.

    Attributes
    ----------
    presence : float
        SAM 2's object-presence probability (sigmoid of the object score logit), 0..1.
        Below 0.5 SAM 2 considers the object absent (occluded or lost).
    iou : float
        The mask decoder's predicted IoU of the returned mask (1.0 for a mask prompt).
    """

    presence: float
    iou: float


class FrameMasks(dict):
    """``{obj_id: bool (H, W) mask}`` for one frame, with ``scores: {obj_id: ObjectScore}``.

    ``boxes: {obj_id: (r0, r1, c0, c1)}``, where known, bounds each of those masks' True pixels
    (maybe loosely: it may hold False pixels at its edges); on large frames it spares a caller
    a scan of the whole mask.
    """

    def __init__(self, masks: Mapping[int, np.ndarray] | Iterable[tuple[int, np.ndarray]] = (),
                 scores: Mapping[int, ObjectScore] | None = None,
                 boxes: Mapping[int, tuple] | None = None):
        super().__init__(masks)
        self.scores: dict[int, ObjectScore] = dict(scores or {})
        self.boxes: dict[int, tuple] = dict(boxes or {})


def compose_labels(frame_shape: tuple[int, int], obj_ids: Iterable[int],
                   mask_of: Callable[[int], np.ndarray | tuple | None]) -> np.ndarray:
    """Paint objects' masks into one label image; where they overlap the higher id wins.

    The rule the label writers use too. Masks are asked for one at a time, so a frame with
    thousands of objects never holds more than one of them besides the labels.

    Parameters
    ----------
    frame_shape : (int, int)
        ``(H, W)`` of the frame.
    obj_ids : iterable of int
        The objects to paint (any order: they are painted in ascending order).
    mask_of : callable
        ``mask_of(obj_id)``: the object's bool ``(H, W)`` mask on the frame, or ``(rows, cols,
        mask)``: slices of the frame and the mask there (nothing outside), or None.

    Returns
    -------
    numpy.ndarray
        ``(H, W)`` uint16, or uint32 when an id exceeds 65535; 0 where no object is.
    """
    ids = sorted(obj_ids)
    dtype = np.uint16 if not ids or ids[-1] <= np.iinfo(np.uint16).max else np.uint32
    out = np.zeros(frame_shape, dtype)
    for obj_id in ids:  # ascending: a higher id paints over a lower one
        m = mask_of(obj_id)
        if isinstance(m, tuple):
            rows, cols, m = m
            out[rows, cols][m] = obj_id
        elif m is not None:
            out[m] = obj_id
    return out
