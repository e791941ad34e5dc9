"""Writing SAM 2 masks into a user's label image without losing anything they made.

Rules (the widget and the command line follow the same ones):

* Only the pixels of the objects being written change, and only where the masks say so: a
  pixel an object held before and no longer predicts goes back to background (0); pixels of
  label ids that are not SAM 2 objects (painted by hand, a Cellpose result...) never change.
* Where two SAM 2 objects claim a pixel, the higher id wins (the same on every frame, whatever
  order frames arrive in).
* Every write remembers exactly which pixels it changed and what they held, so a prompt or a
  whole propagation run can be undone pixel for pixel.

Nothing here imports Qt, napari or torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FrameEdit", "EditRun", "paint_masks"]


@dataclass
class FrameEdit:
    """The pixels one write changed in one 2-D frame, and what they held before."""

    index: tuple  # index of the frame in the label array (ints and slices)
    flat: np.ndarray  # flat indices into the frame
    old: np.ndarray  # previous values at those pixels

    def undo(self, labels: np.ndarray) -> None:
        frame = labels[self.index]  # a view: writing to it writes to the labels
        frame[np.unravel_index(self.flat, frame.shape)] = self.old


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


def paint_masks(labels: np.ndarray, index: tuple, masks: dict, sam_ids) -> FrameEdit | None:
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

    Returns
    -------
    FrameEdit or None
        What changed (None when nothing did).
    """
    frame = labels[index]
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
    return FrameEdit(index=index, flat=changed, old=flat_before[changed].copy())
