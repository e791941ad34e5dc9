"""Checks of what a session is given: frame indices, object ids, points, boxes, masks, labels.

Each check returns the value in the form the session computes with, or raises a
:class:`~napari_sam2.errors.Sam2InputError` whose one line names the problem and the fix,
before anything in the session changes. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from napari_sam2.conversions import MAX_OBJECT_ID, points_in_frame
from napari_sam2.errors import Sam2InputError

__all__ = ["check_frame", "check_bound", "check_obj_id", "check_points", "check_box", "check_mask",
           "LabelImageObjects"]


def _is_index(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_frame(frame: Any, n_frames: int) -> int:
    """A frame index of a stack of ``n_frames``."""
    if not _is_index(frame):
        raise Sam2InputError(f"frame must be an integer index, got {frame!r}")
    if not 0 <= frame < n_frames:
        raise Sam2InputError(f"frame {frame} is outside the stack (frames 0..{n_frames - 1})")
    return int(frame)


def check_bound(value: Any, name: str, n_frames: int, *, upper: bool = False) -> int:
    """A ``start`` (or, with ``upper``, a ``stop``) frame of a propagation."""
    if not _is_index(value):
        raise Sam2InputError(f"{name} must be an integer frame index, got {value!r}")
    top = n_frames if upper else n_frames - 1
    if not 0 <= value <= top:
        raise Sam2InputError(f"{name}={value} is outside the stack (0..{top})")
    return int(value)


def check_obj_id(obj_id: Any) -> int:
    """An object id: a label value from 1 to ``MAX_OBJECT_ID``."""
    if not _is_index(obj_id) or obj_id < 1:
        raise Sam2InputError(
            f"object ids are label values: integers >= 1 (0 is background), got {obj_id!r}"
        )
    if obj_id > MAX_OBJECT_ID:
        raise Sam2InputError(
            f"object id {obj_id} is too large: ids go up to {MAX_OBJECT_ID} (a 32-bit label image)"
        )
    return int(obj_id)


def check_points(points: Any, labels: Any, frame_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Clicks on a frame: float64 ``(N, 2)`` row/col inside the frame, int64 ``(N,)`` labels 0/1."""
    try:
        pts = np.asarray(points, dtype=np.float64)
        lab = np.asarray(labels)
    except (TypeError, ValueError):
        raise Sam2InputError("points must be numbers (N, 2) and labels (N,)") from None
    if pts.ndim == 1 and pts.size == 2:
        pts = pts[None]
    lab = lab.reshape(-1)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise Sam2InputError(f"points must have shape (N, 2) as (row, col) with N >= 1, got {pts.shape}")
    if len(lab) != len(pts):
        raise Sam2InputError(f"got {len(pts)} points but {len(lab)} labels: give one label per point")
    if not np.isin(lab, (0, 1)).all():
        raise Sam2InputError(
            f"labels must be 1 (object) or 0 (background), got {np.unique(lab).tolist()}"
        )
    inside = points_in_frame(pts, frame_shape)
    if not inside.all():
        bad = pts[~inside][0].tolist()
        raise Sam2InputError(
            f"point {bad} (row, col) lies outside the frame of shape {tuple(frame_shape)}: "
            "click on the image (coordinates are frame pixels, not world units)"
        )
    return pts, lab.astype(np.int64)


def check_box(box: Any, frame: int, frame_shape: tuple[int, int]) -> np.ndarray:
    """A box ``[[row0, col0], [row1, col1]]``: corners sorted, clipped to the frame's edges.

    Non-finite corners are returned as they are, for the coordinate conversion to refuse.
    """
    try:
        b = np.sort(np.asarray(box, dtype=np.float64).reshape(2, 2), axis=0)
    except (TypeError, ValueError):
        raise Sam2InputError(
            f"a box is two corners [[row0, col0], [row1, col1]]; got {box!r}"
        ) from None
    # a box dragged a little past the image edge is clipped to it, as a user expects
    h, w = frame_shape
    clipped = np.clip(b, -0.5, [h - 0.5, w - 0.5])
    if np.isfinite(b).all() and np.any(clipped[1] - clipped[0] <= 0) and np.all(b[1] - b[0] > 0):
        raise Sam2InputError(f"box {b.tolist()} lies outside frame {frame} of shape {(h, w)}")
    return clipped if np.isfinite(b).all() else b


def check_mask(mask: Any, frame: int, obj_id: int, frame_shape: tuple[int, int]) -> np.ndarray:
    """A mask prompt: bool ``(H, W)`` with at least one pixel set."""
    m = np.asarray(mask)
    if m.shape != tuple(frame_shape):
        raise Sam2InputError(
            f"mask of shape {m.shape} does not match the frames' shape {tuple(frame_shape)}"
        )
    if m.dtype.kind == "f" and not np.isfinite(m).all():
        raise Sam2InputError("mask holds NaN or infinite values: give a boolean mask")
    m = m.astype(bool)
    if not m.any():
        raise Sam2InputError(
            f"the mask for object {obj_id} on frame {frame} is empty: paint at least one pixel "
            "(use clear_prompts or remove_object to drop a prompt or an object)"
        )
    return m


class LabelImageObjects:
    """The objects of an instance label image, each mask cut from its bounding box on demand.

    The label image is checked and read in one pass (ids made compact, then one bounding box per
    id), so seeding hundreds of objects does not scan it once per object.

    Parameters
    ----------
    labels : array-like of int, (H, W)
        Instance labels, 0 is background.
    frame : int
        The frame they are for (for messages).
    frame_shape : (int, int)
        The frames' ``(H, W)``.
    ids : sequence of int, optional
        Only these ids (each must occur in ``labels``); default: all.

    Attributes
    ----------
    ids : list of int
        The objects, ascending.
    """

    def __init__(self, labels: Any, frame: int, frame_shape: tuple[int, int],
                 ids: Sequence[int] | None = None):
        from scipy import ndimage

        lab = np.asarray(labels)
        if lab.shape != tuple(frame_shape):
            raise Sam2InputError(
                f"label image of shape {lab.shape} does not match the frames' shape {tuple(frame_shape)}"
            )
        if lab.dtype.kind not in "biu":
            raise Sam2InputError(
                f"a label image holds integer ids (0 is background), got dtype {lab.dtype}: "
                "convert it, e.g. labels.astype(np.uint32)"
            )
        flat = lab.reshape(-1)
        nonzero = np.flatnonzero(flat)
        values = flat[nonzero]
        present, inverse = np.unique(values, return_inverse=True)
        if present.size and present[0] < 0:
            raise Sam2InputError(f"label ids must be >= 1 (0 is background), found {int(present[0])}")
        if ids is None:
            wanted = present.astype(np.int64).tolist() if present.size else []
            if not wanted:
                raise Sam2InputError(f"the label image for frame {frame} holds no object (every pixel is 0)")
        else:
            wanted = sorted({check_obj_id(i) for i in np.asarray(ids).reshape(-1).tolist()})
            missing = [i for i in wanted if i not in set(present.tolist())]
            if missing:
                raise Sam2InputError(
                    f"label ids {missing[:10]} do not occur in the label image for frame {frame}"
                )
        for i in wanted:
            check_obj_id(i)
        compact = np.zeros(flat.shape, np.int32 if present.size < 2**31 - 1 else np.int64)
        compact[nonzero] = inverse.reshape(-1) + 1
        self._compact = compact.reshape(lab.shape)
        self._boxes = ndimage.find_objects(self._compact)
        self._index = {int(v): k for k, v in enumerate(present.tolist())}
        self.ids: list[int] = wanted

    def mask(self, obj_id: int) -> np.ndarray:
        """The object's bool ``(H, W)`` mask."""
        k = self._index[obj_id]
        box = self._boxes[k]
        m = np.zeros(self._compact.shape, bool)
        m[box] = self._compact[box] == k + 1
        return m
