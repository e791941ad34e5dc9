"""What a session holds for one object, frame by frame, and how one frame of it is put back.

Every object has its own transformers inference state (its memory bank), so objects stay
independent. :class:`ObjectState` names that state's per-frame stores next to the session's
own records (the prompts as given, exact masks of mask prompts, a one-bit record of every mask
(:class:`MaskBits`), the scores). :class:`FrameSnapshot` is one frame of all of them, taken
before a change, which is what undo puts back.

Nothing here runs the network: see :mod:`napari_sam2.engine.tracking`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_sam2.label_edits import mask_box

if TYPE_CHECKING:
    from napari_sam2.engine.adapter import Sam2Adapter
    from napari_sam2.prompts import Prompt

__all__ = ["ObjectState", "FrameSnapshot", "MaskBits"]


@dataclass(frozen=True, slots=True)
class MaskBits:
    """A low-resolution mask kept after the frame's tracking state is pruned: the bits of its box.

    Exact. It is kept for every tracked frame of every object (a correction click on any frame
    refines it), so only the box around the mask is stored: a cell at 1024 px input takes a few
    bytes instead of the 8 KiB of the whole 256 x 256 square (100 objects x 1,000 frames: 0.8 GiB
    as whole squares).
    """

    shape: tuple[int, int]
    box: tuple[int, int, int, int] | None  # (r0, r1, c0, c1); None: an empty mask
    bits: bytes  # np.packbits of the box's pixels, C order (bytes: less overhead than an array)

    @classmethod
    def pack(cls, mask: np.ndarray) -> MaskBits:
        """The record of a 2-D bool mask."""
        m = np.asarray(mask, bool)
        box = mask_box(m)
        if box is None:
            return cls((m.shape[0], m.shape[1]), None, b"")
        r0, r1, c0, c1 = box
        return cls((m.shape[0], m.shape[1]), box, np.packbits(m[r0:r1, c0:c1]).tobytes())

    def unpack(self) -> np.ndarray:
        """The bool mask again."""
        out = np.zeros(self.shape, bool)
        if self.box is not None:
            r0, r1, c0, c1 = self.box
            n = (r1 - r0) * (c1 - c0)
            bits = np.frombuffer(self.bits, np.uint8)
            out[r0:r1, c0:c1] = np.unpackbits(bits, count=n).reshape(r1 - r0, c1 - c0).astype(bool)
        return out

    @property
    def nbytes(self) -> int:
        """Bytes of the stored bits."""
        return len(self.bits)


@dataclass(eq=False)
class ObjectState:
    """Everything a session holds for one object.

    Made by :meth:`create`. ``cond``, ``non_cond``, ``frames_done``, ``points`` and ``masks``
    are the inference state's own per-frame stores (see
    :class:`~napari_sam2.engine.adapter.Sam2Adapter`), which transformers' steps read and the
    session writes; the other fields are the session's records.
    """

    obj_id: int
    #: transformers' ``Sam2VideoInferenceSession`` (or a family's), with this object at index 0
    inference_state: Any
    #: frame -> output of a conditioning (prompted) frame
    cond: dict
    #: frame -> output of a tracked frame
    non_cond: dict
    #: frame -> ``{"reverse": bool}``: every frame segmented (prompted or tracked) and its direction
    frames_done: dict
    #: frame -> click/box prompt inputs at model size
    points: dict
    #: frame -> mask prompt input at model size (bool)
    masks: dict
    #: (n_frames, 2) presence, iou; NaN where not computed
    quality: np.ndarray
    prompts: list[Prompt] = field(default_factory=list)
    #: frame -> the user's mask, returned unchanged on mask-prompted frames
    exact_masks: dict[int, np.ndarray] = field(default_factory=dict)
    #: frame -> the low-resolution mask, bit-packed over its box: the last result on every
    #: frame, so that a correction click on any tracked frame can refine it
    binary: dict[int, MaskBits] = field(default_factory=dict)

    @classmethod
    def create(cls, obj_id: int, inference_state: Any, adapter: Sam2Adapter, n_frames: int) -> ObjectState:
        """A new object on ``inference_state`` (made by ``adapter.new_state``), with no prompt yet."""
        ad = adapter
        return cls(obj_id, inference_state, cond=ad.cond_outputs(inference_state),
                   non_cond=ad.non_cond_outputs(inference_state),
                   frames_done=ad.frames_done(inference_state), points=ad.point_inputs(inference_state),
                   masks=ad.mask_inputs(inference_state),
                   quality=np.full((n_frames, 2), np.nan, np.float32))

    def output(self, frame: int) -> dict | None:
        """The frame's step output (prompted or tracked), if it is still held."""
        return self.cond.get(frame) or self.non_cond.get(frame)

    def has_prompt(self, frame: int) -> bool:
        """Whether the object has a click, box or mask prompt on ``frame``."""
        return frame in self.cond or frame in self.points or frame in self.masks

    def clear_frame(self, frame: int) -> None:
        """Forget the frame's prompts, its conditioning output and its records."""
        self.points.pop(frame, None)
        self.masks.pop(frame, None)
        self.cond.pop(frame, None)
        self.exact_masks.pop(frame, None)
        self.binary.pop(frame, None)
        self.quality[frame] = np.nan
        self.prompts = [p for p in self.prompts if p.frame != frame]

    def prune(self, frame: int, keep_frames: int | None) -> None:
        """Drop tracked outputs SAM 2 will not read again.

        Those further than ``keep_frames`` from ``frame`` and from every prompted frame (None
        keeps them all).
        """
        if keep_frames is None:
            return
        k = keep_frames
        anchors = list(self.cond)
        for f in list(self.non_cond):
            if abs(f - frame) <= k or any(abs(f - a) <= k for a in anchors):
                continue
            del self.non_cond[f]

    # ------------------------------------------------------------------ undo
    def snapshot(self, frame: int) -> FrameSnapshot:
        """Everything the object holds for ``frame`` (and its prompt list), to put back later."""
        return FrameSnapshot(
            obj=self, frame=frame, point_inputs=self.points.get(frame), mask_input=self.masks.get(frame),
            cond_output=self.cond.get(frame), non_cond_output=self.non_cond.get(frame),
            frame_done=self.frames_done.get(frame), exact_mask=self.exact_masks.get(frame),
            binary_mask=self.binary.get(frame), prompts=list(self.prompts),
            quality=self.quality[frame].copy(),
        )

    def restore(self, snap: FrameSnapshot) -> None:
        """Put one frame back as :meth:`snapshot` found it."""
        frame = snap.frame
        stores: list[tuple[dict[int, Any], Any]] = [
            (self.points, snap.point_inputs), (self.masks, snap.mask_input), (self.cond, snap.cond_output),
            (self.non_cond, snap.non_cond_output), (self.frames_done, snap.frame_done),
            (self.exact_masks, snap.exact_mask), (self.binary, snap.binary_mask)]
        for store, value in stores:
            store.pop(frame, None)
            if value is not None:
                store[frame] = value
        self.prompts = list(snap.prompts)
        self.quality[frame] = snap.quality


@dataclass(frozen=True, eq=False)
class FrameSnapshot:
    """One frame of an object as it was before a change (None: the store had no entry)."""

    #: the object, kept so that undoing a change that removed it brings it back
    obj: ObjectState
    frame: int
    point_inputs: dict | None
    mask_input: Any
    cond_output: dict | None
    non_cond_output: dict | None
    frame_done: dict | None
    exact_mask: np.ndarray | None
    binary_mask: MaskBits | None
    prompts: list[Prompt]
    quality: np.ndarray
