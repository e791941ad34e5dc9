"""Writing SAM 2 masks into a user's label image without losing anything they made.

Rules (the widget and the command line follow the same ones):

* Only the pixels of the objects being written change, and only where the masks say so: a
  pixel an object held before and no longer predicts goes back to background (0); pixels of
  label ids that are not SAM 2 objects (painted by hand, a Cellpose result...) never change.
* Where two SAM 2 objects claim a pixel, the higher id wins (the same on every frame, whatever
  order frames arrive in).
* Every write remembers exactly which pixels it changed and what they held, so a prompt or a
  whole propagation run can be undone pixel for pixel.
* A write may be limited to a region of the frame (the box around the new masks and where the
  objects were): on a 6000 x 6000 frame holding a 30 px cell, only that box is read, compared
  and remembered.

Nothing here imports Qt, napari or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FrameEdit", "EditRun", "paint_masks", "mask_box", "union_box", "box_slices"]


@dataclass
class FrameEdit:
    """The pixels one write changed in one 2-D frame, and what they held before."""

    index: tuple  # index of the frame in the label array (ints and slices)
    flat: np.ndarray  # flat indices into the frame (into ``region`` of it when one is given)
    old: np.ndarray  # previous values at those pixels
    region: tuple | None = None  # (row slice, column slice) of the frame; None: all of it

    def undo(self, labels: np.ndarray) -> None:
        frame = labels[self.index]  # a view: writing to it writes to the labels
        if self.region is not None:
            frame = frame[self.region]
        frame[np.unravel_index(self.flat, frame.shape)] = self.old

    @property
    def box(self) -> tuple | None:
        """``(r0, r1, c0, c1)`` of the region, None for the whole frame."""
        if self.region is None:
            return None
        rows, cols = self.region
        return rows.start, rows.stop, cols.start, cols.stop


@dataclass
class EditRun:
    """All the writes of one action (a prompt or a propagation run), undone together."""

    label: str
    edits: list[FrameEdit] = field(default_factory=list)

    @property
    def frames(self) -> list:
        return [e.index for e in self.edits]

    def undo(self, labels: np.ndarray) -> None:
        for edit in reversed(self.edits):
            edit.undo(labels)


def mask_box(mask) -> tuple | None:
    """``(r0, r1, c0, c1)`` bounding the True pixels of a 2-D mask (None when it is empty)."""
    m = np.asarray(mask, bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m[rows[0]:rows[-1] + 1].any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def union_box(*boxes) -> tuple | None:
    """The smallest box holding all the given boxes (Nones are skipped)."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), max(b[1] for b in boxes),
            min(b[2] for b in boxes), max(b[3] for b in boxes))


def box_slices(box) -> tuple:
    """``(r0, r1, c0, c1)`` -> ``(slice(r0, r1), slice(c0, c1))``."""
    return slice(int(box[0]), int(box[1])), slice(int(box[2]), int(box[3]))


def paint_masks(labels: np.ndarray, index: tuple, masks: dict, sam_ids,
                region: tuple | None = None) -> FrameEdit | None:
    """Write ``{obj_id: bool (H, W)}`` into ``labels[index]`` following the module's rules.

    Parameters
    ----------
    labels : numpy.ndarray
        The label image (any number of dimensions); modified in place.
    index : tuple
        Index selecting one 2-D frame of ``labels`` (e.g. ``(t, slice(None), slice(None))``).
    masks : dict[int, numpy.ndarray]
        New masks of the objects being written on this frame.
    sam_ids : iterable of int
        Ids of all SAM 2 objects (a pixel of one of them may be taken by a higher id; any other
        nonzero pixel is the user's and stays).
    region : tuple of two slices, optional
        Only this part of the frame is read and written; masks may have the frame's shape (they
        are cropped) or the region's. The caller makes sure the objects' old pixels lie inside.

    Returns
    -------
    FrameEdit or None
        What changed (None when nothing did).
    """
    frame = labels[index]
    if region is not None:
        full = frame.shape
        frame = frame[region]
        masks = {k: (np.asarray(m)[region] if np.shape(m) == full else m) for k, m in masks.items()}
    before = np.array(frame, copy=True)
    sam = np.array(sorted({int(i) for i in sam_ids} | {int(i) for i in masks}))
    new = before.copy()
    written = sorted(int(i) for i in masks)
    for obj_id in written:  # forget where these objects were...
        new[before == obj_id] = 0
    for obj_id in written:  # ...and paint where they are now, in increasing id order
        m = np.asarray(masks[obj_id], bool)
        if m.shape != new.shape:
            raise ValueError(f"mask of shape {m.shape} does not fit a frame of shape {new.shape}")
        # background, or a lower SAM 2 id (higher ids win); never a label of the user's
        free = (new == 0) | (np.isin(new, sam) & (new < obj_id))
        new[m & free] = obj_id
    changed = np.flatnonzero((new != before).reshape(-1))
    if changed.size == 0:
        return None
    flat_before = before.reshape(-1)
    frame[...] = new
    return FrameEdit(index=index, flat=changed, old=flat_before[changed].copy(), region=region)
