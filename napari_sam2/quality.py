"""Per-frame tracking quality of an object: which frames are fine, low or lost (no Qt)."""

from __future__ import annotations

import numpy as np

__all__ = ["flagged_frames", "frame_states"]


def frame_states(quality: np.ndarray, iou_threshold: float = 0.5, drop: float = 0.2) -> list[str]:
    """Classify every frame as ``"none"``, ``"ok"``, ``"low"`` or ``"lost"``.

    Parameters
    ----------
    quality : numpy.ndarray, (n_frames, 2)
        Presence and predicted IoU per frame, NaN where not computed
        (:meth:`Sam2Session.quality`).
    iou_threshold : float
        Predicted IoU below which a frame is ``"low"``.
    drop : float
        A frame is also ``"low"`` when its predicted IoU is this much below the object's median
        over the tracked frames: a sudden drop matters even when the values are high overall.

    Returns
    -------
    list of str
        ``"none"`` not computed, ``"lost"`` presence < 0.5 (SAM 2 says the object is absent),
        ``"low"`` low or dropped predicted IoU, ``"ok"`` otherwise.
    """
    q = np.asarray(quality, dtype=float).reshape(-1, 2)
    tracked = ~np.isnan(q[:, 0])
    ious = q[tracked & ~np.isnan(q[:, 1]), 1]
    floor = iou_threshold if ious.size == 0 else max(iou_threshold, float(np.median(ious)) - drop)
    states = []
    for (presence, iou), done in zip(q, tracked):
        if not done:
            states.append("none")
        elif presence < 0.5:
            states.append("lost")
        elif iou < floor:
            states.append("low")
        else:
            states.append("ok")
    return states


def flagged_frames(quality: np.ndarray, iou_threshold: float = 0.5, drop: float = 0.2) -> np.ndarray:
    """Frames where an object is lost or its predicted IoU is low or drops, sorted.

    See :func:`frame_states`.
    """
    return np.array([f for f, st in enumerate(frame_states(quality, iou_threshold, drop))
                     if st in ("lost", "low")], dtype=int)
