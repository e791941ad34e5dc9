"""Sam2Session: prompts on any frame, propagation through a stack, bounded memory.

The session follows SAM 2's own predictor (``init_state`` / ``add_new_points_or_box`` /
``propagate_in_video``) and runs transformers' ``Sam2VideoModel``, but corrects what the
transformers session gets wrong for interactive work:

* **Corrections are kept.** A prompt on a frame that was already tracked is stored as a
  *conditioning* frame, so a later propagation yields it unchanged instead of recomputing it.
* **Refinement clicks.** A click on a frame that already has a mask feeds that mask's logits back
  into the decoder, as SAM 2's demo does.
* **Objects are independent.** Every object has its own memory bank (one transformers inference
  state each, sharing one image-feature cache), so an object can be added after propagation,
  removed, or have its prompts cleared without touching the others.
* **Objects in batches.** On each frame, objects whose memories SAM 2 reads from the same
  frames are tracked in one batch (``batch_objects``), which gives the masks of tracking them
  one at a time; seeding hundreds of objects from a label image is one call
  (:meth:`Sam2Session.add_label_image`).
* **Bounded memory.** Frames are read and preprocessed when needed (see
  :mod:`napari_sam2.engine.frames`); image features sit in a bounded cache; per-frame tracking
  state is pruned to what SAM 2 reads again: conditioning frames, the last ``keep_frames``
  frames' memories and object pointers, and the frames next to each prompt (where a later
  propagation starts). Memory therefore does not grow with the length of the stack.

The network is driven step by step through :mod:`napari_sam2.engine.adapter`, the one module
that calls transformers' private methods; the session never touches them itself.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.conversions import MAX_OBJECT_ID, box_to_model_corners, points_in_frame, rowcol_to_model_xy
from napari_sam2.engine.adapter import adapter_for
from napari_sam2.engine.cache import FeatureCache
from napari_sam2.engine.frames import FrameSource, LazyModelFrames
from napari_sam2.engine.models import as_sam2_model
from napari_sam2.errors import Sam2InputError
from napari_sam2.prompts import Prompt, prompts_in_effect

__all__ = ["Sam2Session", "ObjectScore", "FrameMasks"]

# SAM 2's predictor clamps re-used mask logits to avoid rare numerical issues.
_PREV_LOGITS_CLAMP = 32.0
# Logit magnitude for a mask known only as a binary record (same scale as SAM 2's mask inputs).
_BINARY_LOGIT = 10.0
_UNDO_DEPTH = 50
# Objects tracked in one batch on a CPU: small batches stay in the caches (measured on 2 cores
# at 256 px, 16 objects: batches of 2-4 ran 1.5-2x one at a time, batches of 16 1.3x)
_CPU_MAX_BATCH = 4
_GPU_MAX_BATCH = 256
# Working memory of one object in a batch, per model-input pixel (memory attention over ~7
# frames of memories, the decoder's candidate masks, the memory encoder's input): ~100 MB at 1024 px
_WORK_BYTES_PER_PIXEL = 96


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
    """``{obj_id: bool (H, W) mask}`` for one frame, with ``scores: {obj_id: ObjectScore}``."""

    def __init__(self, masks=(), scores=None):
        super().__init__(masks)
        self.scores: dict[int, ObjectScore] = dict(scores or {})


@dataclass
class _Track:
    """Everything the session holds for one object."""

    obj_id: int
    state: Any  # transformers Sam2VideoInferenceSession, with this object at index 0
    # the state's per-frame stores (see Sam2Adapter): conditioning and tracked outputs, the
    # frames tracked (with their direction), click/box and mask prompts
    cond: dict
    non_cond: dict
    tracked: dict
    points: dict
    masks: dict
    prompts: list[Prompt] = field(default_factory=list)
    # frame -> the user's mask, returned unchanged on mask-prompted frames
    exact_masks: dict[int, np.ndarray] = field(default_factory=dict)
    # frame -> bit-packed low-resolution mask: the last result on every frame, ~1 bit per
    # model output pixel, so that a correction click on any tracked frame can refine it
    binary: dict[int, np.ndarray] = field(default_factory=dict)
    quality: np.ndarray | None = None  # (n_frames, 2) presence, iou; NaN where not computed


class Sam2Session:
    """Segment and track objects through a stack with SAM 2.

    Parameters
    ----------
    model : Sam2Model or transformers.Sam2VideoModel
        From :func:`napari_sam2.load_model`.
    frames : array-like
        ``(T, Y, X)`` or ``(T, Y, X, C)``, any numeric dtype, anything with ``shape``, ``dtype``,
        ``ndim`` and ``__getitem__``. Frames are read one at a time when needed. A 2-D image
        is a one-frame stack.
    channels, contrast, rgb
        How frames become SAM 2's RGB input; see :class:`~napari_sam2.engine.frames.FrameSource`.
    keep_frames : int or None
        Tracking state is kept for this many frames behind the current one and around each
        prompted frame (SAM 2 reads at most the last 6 frames' memories and 16 object
        pointers, so the default loses nothing during a propagation). ``None`` keeps every
        frame, as SAM 2's own predictor does, for exact results of correction clicks far from
        any prompt at the cost of memory that grows with the stack.
    cache_frames : int
        Frames whose image features stay cached (clicks on them skip the image encoder).
    disk_cache : str or Path, optional
        A folder where image features are also stored (zarr), so that the image encoder never
        runs twice on a frame, across sessions too. Entries are keyed by the frames' pixels, the
        preprocessing and the model, so a stale entry is never used
        (see :class:`~napari_sam2.engine.cache.DiskFeatureStore`).
    prefetch : int
        Frames read and preprocessed ahead of the one being tracked, on a background thread
        (0: none). Helps with slow readers (video, compressed or remote files).
    encode_batch : int
        Frames the image encoder runs on at once during propagation (1: one at a time). Worth
        trying on a GPU; float results differ from one at a time in the last bits.
    batch_objects : bool
        Track objects together: on each frame, the objects whose memories are read from the
        same frames (the same prompted frames and tracked frames, e.g. all seeded on one frame)
        go through memory attention, mask decoder and memory encoder in one batch. An object
        whose memory differs (a correction, another prompted frame, added later) is tracked in
        its own batch until its memory matches again. ``False`` tracks them one at a time, as
        transformers' own session does (and as EdgeTAM always does: its memory attention takes
        one object at a time). The masks are the same either way; the logits differ
        in the last bits at most.
    max_batch : int, optional
        The most objects in one batch. Default: chosen from the free memory on a GPU, 4 on
        a CPU or an Apple GPU.

    Examples
    --------
    >>> session = Sam2Session(model, stack)                        # doctest: +SKIP
    >>> mask = session.add_points(0, 1, [[120, 88]], [1])          # doctest: +SKIP
    >>> for frame, masks in session.propagate():                   # doctest: +SKIP
    ...     labels[frame][masks[1]] = 1
    """

    def __init__(self, model, frames, *, channels=None, contrast="auto", rgb=None,
                 keep_frames: int | None = 16, cache_frames: int = 8, disk_cache=None,
                 prefetch: int = 0, encode_batch: int = 1, batch_objects: bool = True,
                 max_batch: int | None = None):
        self.model = as_sam2_model(model)
        self._adapter = adapter_for(self.model.network)
        self.source = FrameSource(frames, self.model.image_size, channels=channels,
                                  contrast=contrast, rgb=rgb, mean=self.model.image_mean,
                                  std=self.model.image_std)
        if keep_frames is not None and keep_frames < 1:
            raise Sam2InputError("keep_frames must be at least 1, or None to keep every frame")
        self.keep_frames = keep_frames
        for name, value, low in (("encode_batch", encode_batch, 1), ("prefetch", prefetch, 0),
                                 ("max_batch", 1 if max_batch is None else max_batch, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise Sam2InputError(f"{name} must be an integer >= {low}, got {value!r}")
        store = None
        if disk_cache is not None:
            from napari_sam2.engine.cache import DiskFeatureStore

            store = DiskFeatureStore.for_session(disk_cache, self.source, self.model)
        self.cache = FeatureCache(cache_frames, store=store)
        self._frames = LazyModelFrames(self.source, self.model.device)
        self._prefetch = None
        if prefetch or encode_batch > 1:
            from napari_sam2.engine.prefetch import Prefetcher

            try:
                self._prefetch = self._frames = Prefetcher(self.source, self.model, self.cache,
                                                           depth=prefetch, encode_batch=encode_batch)
            except ValueError as err:
                raise Sam2InputError(str(err)) from None
        self._tracks: dict[int, _Track] = {}
        self._undo: list[tuple] = []
        self._undo_group: list | None = None  # collects the entries of one add_label_image call
        self._lock = threading.RLock()
        self._cancel_lock = threading.Lock()
        self._pos_enc = None  # one memory positional encoding shared by all stored memories
        # a family whose tracker takes one object at a time tracks them one after the other
        self.batch_objects = bool(batch_objects) and self._adapter.tracks_batches
        self.max_batch = int(max_batch) if max_batch is not None else self._default_max_batch()
        self._cancelled = 0  # cancel() count: a propagation stops when it changes

    def _default_max_batch(self) -> int:
        dev = self.model.device
        if dev.type != "cuda":
            return _CPU_MAX_BATCH
        free, _ = torch.cuda.mem_get_info(dev)
        per_object = _WORK_BYTES_PER_PIXEL * self.model.image_size ** 2
        return int(max(1, min(_GPU_MAX_BATCH, 0.5 * free // per_object)))

    def cancel(self) -> None:
        """Stop every running :meth:`propagate` after the frame it is computing.

        Safe to call from any thread (a GUI button, a signal handler). The propagation yields
        the frame it was computing, if any, and ends; every finished frame stays in the session.
        A propagation started after this call is not affected. (Closing the generator from
        another thread while it runs raises ``ValueError: generator already executing``: this
        is the way to stop one from outside.)
        """
        with self._cancel_lock:
            self._cancelled += 1

    # ------------------------------------------------------------------ properties
    @property
    def n_frames(self) -> int:
        """Number of frames in the stack."""
        return self.source.n_frames

    @property
    def frame_shape(self) -> tuple[int, int]:
        """``(H, W)`` of every frame and of every returned mask."""
        return self.source.frame_shape

    @property
    def contrast(self) -> np.ndarray:
        """The contrast limits applied to every frame: (2,) or (channels, 2)."""
        return self.source.contrast

    @property
    def objects(self) -> list[int]:
        """Ids of the objects that have prompts, in the order they were added."""
        return list(self._tracks)

    @property
    def network(self):
        return self.model.network

    def prompts(self, obj_id: int) -> list[Prompt]:
        """The object's prompts in the order they were given (for saving and replaying)."""
        return list(self._track(obj_id).prompts)

    def prompted_frames(self, obj_id: int) -> list[int]:
        """Frames where the object has prompts (its conditioning frames), sorted."""
        return sorted(self._track(obj_id).cond)

    def quality(self, obj_id: int) -> np.ndarray:
        """``(n_frames, 2)`` float array of presence and predicted IoU; NaN where not computed."""
        return self._track(obj_id).quality.copy()

    def score(self, frame: int, obj_id: int) -> ObjectScore | None:
        """The object's score on a frame, or None if it was not computed."""
        q = self._track(obj_id).quality[self._check_frame(frame)]
        return None if np.isnan(q[0]) else ObjectScore(float(q[0]), float(q[1]))

    def mask(self, frame: int, obj_id: int) -> np.ndarray | None:
        """The last mask computed for the object on a frame, or None.

        Prompted frames and recently tracked frames give the exact mask; frames whose tracking
        state was pruned give the mask rebuilt from its low-resolution record.
        """
        frame = self._check_frame(frame)
        track = self._track(obj_id)
        with self._lock:
            if frame in track.exact_masks:
                return track.exact_masks[frame].copy()
            out = track.cond.get(frame) or track.non_cond.get(frame)
            if out is not None:
                return self._upsample(out["pred_masks"])
            if frame in track.binary:
                return self._upsample(self._binary_logits(track, frame))
        return None

    # ------------------------------------------------------------------ prompts
    def add_points(self, frame: int, obj_id: int, points, labels, *, replace: bool = False) -> np.ndarray:
        """Click on an object: positive (1) and negative (0) points on one frame.

        Parameters
        ----------
        frame : int
            Frame index.
        obj_id : int
            Object id (a label value, >= 1). A new id starts a new object.
        points : array-like, shape (N, 2)
            ``(row, col)`` pixel coordinates in the frame.
        labels : array-like, shape (N,)
            1 for points on the object, 0 for points on the background.
        replace : bool
            Replace the object's earlier clicks (and box) on this frame instead of adding to
            them. Added clicks refine the frame's current mask, as in SAM 2's demo.

        Returns
        -------
        numpy.ndarray
            The object's mask on that frame, bool ``(H, W)``.
        """
        frame = self._check_frame(frame)
        obj_id = self._check_obj_id(obj_id)
        pts, lab = self._check_points(points, labels)
        coords = torch.from_numpy(rowcol_to_model_xy(pts, self.frame_shape, self.model.image_size))
        coords = coords.view(1, 1, -1, 2)
        lab_t = torch.from_numpy(lab.astype(np.int32)).view(1, 1, -1)
        with self._lock:
            track = self._tracks.get(obj_id)
            existing = None if track is None else track.points.get(frame)
            if existing is not None and not replace:
                coords = torch.cat([existing["point_coords"].cpu(), coords], dim=2)
                lab_t = torch.cat([existing["point_labels"].cpu(), lab_t], dim=2)
            prompt = Prompt(frame, "points", points=pts, labels=lab, replace=replace)
            return self._prompt(obj_id, frame, prompt, point_inputs=(coords, lab_t),
                                refine=not replace)

    def add_box(self, frame: int, obj_id: int, box) -> np.ndarray:
        """Prompt an object with a box ``[[row0, col0], [row1, col1]]`` (corners in any order).

        A box replaces the object's earlier clicks on that frame (SAM 2 reads the box first);
        clicks added afterwards refine it.

        Returns
        -------
        numpy.ndarray
            The object's mask on that frame, bool ``(H, W)``.
        """
        frame = self._check_frame(frame)
        obj_id = self._check_obj_id(obj_id)
        try:
            b = np.sort(np.asarray(box, dtype=np.float64).reshape(2, 2), axis=0)
        except (TypeError, ValueError):
            raise Sam2InputError(
                f"a box is two corners [[row0, col0], [row1, col1]]; got {box!r}"
            ) from None
        # a box dragged a little past the image edge is clipped to it, as a user expects
        h, w = self.frame_shape
        clipped = np.clip(b, -0.5, [h - 0.5, w - 0.5])
        if np.isfinite(b).all() and np.any(clipped[1] - clipped[0] <= 0) and np.all(b[1] - b[0] > 0):
            raise Sam2InputError(f"box {b.tolist()} lies outside frame {frame} of shape {(h, w)}")
        b = clipped if np.isfinite(b).all() else b
        try:
            corners = box_to_model_corners(b, self.frame_shape, self.model.image_size)
        except ValueError as err:
            raise Sam2InputError(str(err)) from None
        coords = torch.from_numpy(corners).view(1, 1, 2, 2)
        lab_t = torch.tensor([[[2, 3]]], dtype=torch.int32)
        with self._lock:
            prompt = Prompt(frame, "box", box=b)
            return self._prompt(obj_id, frame, prompt, point_inputs=(coords, lab_t), refine=False)

    def add_mask(self, frame: int, obj_id: int, mask) -> np.ndarray:
        """Prompt an object with a mask (e.g. a painted label or a Cellpose/StarDist result).

        SAM 2 takes a mask prompt as the truth on its frame: the same mask is returned here and
        on that frame during propagation.

        Parameters
        ----------
        mask : array-like, bool (H, W)
            Nonzero pixels belong to the object.

        Returns
        -------
        numpy.ndarray
            The mask, bool ``(H, W)``.
        """
        frame = self._check_frame(frame)
        obj_id = self._check_obj_id(obj_id)
        m = np.asarray(mask)
        if m.shape != tuple(self.frame_shape):
            raise Sam2InputError(
                f"mask of shape {m.shape} does not match the frames' shape {tuple(self.frame_shape)}"
            )
        if m.dtype.kind == "f" and not np.isfinite(m).all():
            raise Sam2InputError("mask holds NaN or infinite values: give a boolean mask")
        m = m.astype(bool)
        if not m.any():
            raise Sam2InputError(
                f"the mask for object {obj_id} on frame {frame} is empty: paint at least one pixel "
                "(use clear_prompts or remove_object to drop a prompt or an object)"
            )
        with self._lock:
            self._add_mask(frame, obj_id, m)
            return m.copy()

    def add_label_image(self, frame: int, labels, ids: Sequence[int] | None = None) -> list[int]:
        """Seed objects from an instance label image (a Cellpose/StarDist result, painted labels).

        Every nonzero id of ``labels`` (or each of ``ids``) becomes the object with that id,
        prompted with its mask on ``frame``, exactly as :meth:`add_mask` would; an object that
        exists already gets that mask as a new prompt on the frame (replacing the frame's
        earlier prompts). Ids are any label values (not only 1..n). The label image is read in
        one pass, each object's mask is cut from its bounding box, and :meth:`undo` reverts the
        whole call at once.

        Parameters
        ----------
        frame : int
            Frame index.
        labels : array-like of int, (H, W)
            Instance labels (0 is background), any integer dtype napari uses for labels, with
            ids from 1 to ``MAX_OBJECT_ID`` (2**32 - 1, what a session file records).
        ids : sequence of int, optional
            Only these ids (each must occur in ``labels``); default: all.

        Returns
        -------
        list of int
            The ids seeded, ascending.
        """
        from scipy import ndimage

        frame = self._check_frame(frame)
        lab = np.asarray(labels)
        if lab.shape != tuple(self.frame_shape):
            raise Sam2InputError(
                f"label image of shape {lab.shape} does not match the frames' shape {tuple(self.frame_shape)}"
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
            wanted = sorted({self._check_obj_id(i) for i in np.asarray(ids).reshape(-1).tolist()})
            missing = [i for i in wanted if i not in set(present.tolist())]
            if missing:
                raise Sam2InputError(
                    f"label ids {missing[:10]} do not occur in the label image for frame {frame}"
                )
        for i in wanted:
            self._check_obj_id(i)
        # one pass: ids made compact (1..n), then one bounding box per id
        compact = np.zeros(flat.shape, np.int32 if present.size < 2**31 - 1 else np.int64)
        compact[nonzero] = inverse.reshape(-1) + 1
        compact = compact.reshape(lab.shape)
        boxes = ndimage.find_objects(compact)
        index = {int(v): k for k, v in enumerate(present.tolist())}
        done = []
        with self._lock:
            self._undo_group = []
            try:
                for obj_id in wanted:
                    k = index[obj_id]
                    box = boxes[k]
                    m = np.zeros(lab.shape, bool)
                    m[box] = compact[box] == k + 1
                    self._add_mask(frame, obj_id, m)
                    done.append(obj_id)
            finally:
                group, self._undo_group = self._undo_group, None
                if group:
                    self._remember(("group", tuple(done), frame, group))
        return done

    def labels(self, frame: int) -> np.ndarray:
        """The frame's label image from every object's latest mask (see :meth:`mask`).

        Where objects overlap the higher id wins, the rule the label writers use. A
        ``propagate("both")`` with objects prompted on different frames yields a frame once
        for the objects tracked forward and again for those tracked backward, each time with
        only those objects: compose the frame with this method (or merge the yields) instead
        of writing each yield over the last.

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` uint16, or uint32 when an id exceeds 65535; 0 where no object is.
        """
        frame = self._check_frame(frame)
        with self._lock:
            ids = sorted(self._tracks)
            dtype = np.uint16 if not ids or ids[-1] <= np.iinfo(np.uint16).max else np.uint32
            out = np.zeros(self.frame_shape, dtype)
            for obj_id in ids:  # ascending: a higher id paints over a lower one
                m = self.mask(frame, obj_id)
                if m is not None:
                    out[m] = obj_id
        return out

    def _add_mask(self, frame: int, obj_id: int, m: np.ndarray) -> None:
        """Prompt an object with a checked bool (H, W) mask."""
        s = self.model.image_size
        mt = torch.from_numpy(m).to(self.model.device, torch.float32)[None, None]
        if mt.shape[-2:] != (s, s):
            # as SAM 2's predictor: antialiased resize to the model size, then binarise
            mt = F.interpolate(mt, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
            mt = (mt >= 0.5).float()
        # one read-only array serves as the prompt's record and the frame's exact mask
        m = m.copy()
        m.flags.writeable = False
        self._prompt(obj_id, frame, Prompt(frame, "mask", mask=m), mask_inputs=mt, exact=m)

    def clear_prompts(self, frame: int, obj_id: int) -> None:
        """Remove an object's prompts on one frame; an object left without prompts is removed."""
        frame = self._check_frame(frame)
        with self._lock:
            track = self._track(obj_id)
            if frame not in track.cond and frame not in track.points and frame not in track.masks:
                raise Sam2InputError(f"object {obj_id} has no prompt on frame {frame}")
            self._push_undo(track, frame)
            track.points.pop(frame, None)
            track.masks.pop(frame, None)
            track.cond.pop(frame, None)
            track.exact_masks.pop(frame, None)
            track.binary.pop(frame, None)
            track.quality[frame] = np.nan
            track.prompts = [p for p in track.prompts if p.frame != frame]
            if not track.cond:
                del self._tracks[obj_id]

    def remove_object(self, obj_id: int) -> None:
        """Forget an object: its prompts, masks and memory. Other objects are untouched."""
        with self._lock:
            track = self._track(obj_id)
            self._remember(("object", track.obj_id, None, track))
            del self._tracks[track.obj_id]

    def undo(self) -> tuple[int | None, int] | None:
        """Revert the last ``add_*``, :meth:`clear_prompts` or :meth:`remove_object`.

        Returns
        -------
        (frame, obj_id) or None
            Where the reverted change was (``frame`` is None for a removed object), or None
            when there is nothing to undo. Undoing an :meth:`add_label_image` call reverts all
            its objects at once and gives ``(frame, ids)`` with the tuple of their ids.
        """
        with self._lock:
            if not self._undo:
                return None
            entry = self._undo.pop()
            if entry[0] == "group":  # one add_label_image call
                for sub in reversed(entry[3]):
                    self._revert(sub)
                return entry[2], entry[1]
            return self._revert(entry)

    def _revert(self, entry) -> tuple[int | None, int]:
        kind, obj_id, frame, saved = entry
        if kind == "object":
            self._tracks[obj_id] = saved
            return None, obj_id
        if saved is None:  # the change created the object
            self._tracks.pop(obj_id, None)
            return frame, obj_id
        track = self._tracks.get(obj_id) or saved["track"]
        self._tracks[obj_id] = track
        for store, key in ((track.points, "points"), (track.masks, "masks"),
                           (track.cond, "cond"), (track.non_cond, "non_cond"),
                           (track.tracked, "tracked"), (track.exact_masks, "exact"),
                           (track.binary, "binary")):
            store.pop(frame, None)
            if saved[key] is not None:
                store[frame] = saved[key]
        track.prompts = saved["prompts"]
        track.quality[frame] = saved["quality"]
        return frame, obj_id

    # ------------------------------------------------------------------ propagation
    def plan_propagation(self, direction: str = "both", start: int | None = None,
                         stop: int | None = None, obj_ids: Sequence[int] | None = None) -> list[int]:
        """The frames :meth:`propagate` will yield, in order (for progress bars)."""
        with self._lock:
            return [frame for _, frame, _ in self._plan(direction, start, stop, obj_ids)]

    def propagate(self, direction: str = "both", start: int | None = None, stop: int | None = None,
                  obj_ids: Sequence[int] | None = None) -> Iterator[tuple[int, FrameMasks]]:
        """Carry the objects through the stack with SAM 2's memory, frame by frame.

        Parameters
        ----------
        direction : {"both", "forward", "backward"}
            ``"forward"`` tracks each object from its first prompted frame to the end,
            ``"backward"`` from its last prompted frame to the start, ``"both"`` forward and
            then backward from its first prompted frame.
        start, stop : int, optional
            Only frames ``start <= frame < stop`` are processed. Propagation starts at the
            prompt, or at the bound nearest to it when the prompt lies outside.
        obj_ids : sequence of int, optional
            Objects to track (default: all).

        Yields
        ------
        (int, FrameMasks)
            The frame index and ``{obj_id: bool (H, W)}`` for the objects tracked on it, with
            ``.scores``. Prompted frames yield their prompt's mask unchanged. With objects
            prompted on different frames, ``"both"`` yields a frame twice: once for the
            objects tracked forward and again for those tracked backward; use
            :meth:`labels` (or merge the yields) to compose a frame. To stop, break out of
            the loop, or call :meth:`cancel` from another thread: every finished frame stays
            in the session.
        """
        with self._lock:
            plan = self._plan(direction, start, stop, obj_ids)
        return self._run_plan(plan, self._cancelled)

    def _run_plan(self, plan, cancelled):
        if self._prefetch is not None:
            # the frames whose image features will be looked up, in order (not prompted ones)
            self._prefetch.start([f for _, f, ids in plan
                                  if any(i in self._tracks and f not in self._tracks[i].cond for i in ids)])
        try:
            for reverse, frame, obj_ids in plan:
                if self._cancelled != cancelled:
                    return
                with self._lock, self.model.inference():
                    result = self._track_frame(frame, obj_ids, reverse)
                yield frame, result
        finally:
            if self._prefetch is not None:
                self._prefetch.stop()

    def _plan(self, direction, start, stop, obj_ids):
        if direction not in ("both", "forward", "backward"):
            raise Sam2InputError(f"direction must be 'both', 'forward' or 'backward', got {direction!r}")
        lo = 0 if start is None else self._check_bound(start, "start")
        hi = self.n_frames if stop is None else self._check_bound(stop, "stop", upper=True)
        if hi <= lo:
            raise Sam2InputError(f"stop ({hi}) must be greater than start ({lo})")
        ids = self.objects if obj_ids is None else [self._track(i).obj_id for i in obj_ids]
        if not ids:
            raise Sam2InputError("there is nothing to propagate: add a prompt (point, box or mask) first")
        forward: dict[int, list[int]] = {}
        backward: dict[int, list[int]] = {}
        for obj_id in ids:
            cond = sorted(self._tracks[obj_id].cond)
            if direction in ("both", "forward") and cond[0] < hi:
                for f in range(max(cond[0], lo), hi):
                    forward.setdefault(f, []).append(obj_id)
            origin = cond[-1] if direction == "backward" else cond[0]
            if direction in ("both", "backward") and origin >= lo:
                first = min(origin, hi - 1)
                if direction == "both" and first == origin:
                    first -= 1  # the forward pass already yielded the prompted frame
                for f in range(first, lo - 1, -1):
                    backward.setdefault(f, []).append(obj_id)
        plan = [(False, f, forward[f]) for f in sorted(forward)]
        plan += [(True, f, backward[f]) for f in sorted(backward, reverse=True)]
        return plan

    # ------------------------------------------------------------------ automatic masks
    def segment_everything(self, frame: int, *, points_per_side: int = 32, pred_iou_thresh: float = 0.8,
                           stability_score_thresh: float = 0.9, min_area: int = 64,
                           max_area: int | None = None, crop_n_layers: int = 0, progress=None,
                           **options) -> np.ndarray:
        """Find every object on one frame: SAM 2's automatic mask generation, as labels.

        A grid of point prompts runs through SAM 2's decoder on the frame's image features
        (encoded once, shared with tracking); masks are filtered by predicted IoU and
        stability, de-duplicated, cleaned of small holes and islands, and painted without
        overlaps (smaller objects on top). The session's objects, prompts and undo history are
        not touched: review or edit the result, then pass it to :meth:`add_label_image`.

        Parameters
        ----------
        frame : int
        points_per_side : int
            Grid of ``points_per_side**2`` point prompts over the frame.
        pred_iou_thresh, stability_score_thresh : float
            Keep masks with a predicted IoU above, and a stability score at least, these (0..1).
        min_area : int
            Holes, islands and objects smaller than this many pixels are removed.
        max_area : int, optional
            Drop masks larger than this many pixels (e.g. the background).
        crop_n_layers : int
            Also search ``4, 16, ...`` overlapping crops, each encoded on its own (slower;
            finds small objects on large frames).
        progress : callable(done, total), optional
            Called after each decoder batch; raise from it to cancel.
        **options
            The other :class:`~napari_sam2.engine.everything.AutoMaskSettings`
            (``points_per_batch``, ``box_nms_thresh``, ``stability_score_offset``, ...).

        Returns
        -------
        numpy.ndarray
            ``(H, W)`` label image, uint16 (uint32 beyond 65,535 objects), ids ``1..n``.
        """
        from napari_sam2.engine import everything

        frame = self._check_frame(frame)
        settings = everything.AutoMaskSettings.from_options(
            points_per_side=points_per_side, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh, min_area=min_area, max_area=max_area,
            crop_n_layers=crop_n_layers, **options)
        with self.model.inference():
            with self._lock:  # reads of the stack and of the cache, as a click does
                feats = everything.frame_features(self.model, self.cache, self._frames, frame)
                image = self.source.normalized(frame) if settings.crop_n_layers else None
            found = everything.generate_masks(self.model, feats, self.frame_shape, settings,
                                              image=image, progress=progress)
        return everything.labels_from_masks(found, self.frame_shape, settings.min_area)

    # ------------------------------------------------------------------ internals
    def _track(self, obj_id) -> _Track:
        try:
            return self._tracks[int(obj_id)]
        except (KeyError, TypeError, ValueError):
            known = ", ".join(map(str, self._tracks)) or "none yet"
            raise Sam2InputError(f"unknown object id {obj_id!r} (objects: {known})") from None

    def _check_frame(self, frame) -> int:
        if isinstance(frame, bool) or not isinstance(frame, (int, np.integer)):
            raise Sam2InputError(f"frame must be an integer index, got {frame!r}")
        if not 0 <= frame < self.n_frames:
            raise Sam2InputError(f"frame {frame} is outside the stack (frames 0..{self.n_frames - 1})")
        return int(frame)

    def _check_bound(self, value, name, upper=False) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise Sam2InputError(f"{name} must be an integer frame index, got {value!r}")
        top = self.n_frames if upper else self.n_frames - 1
        if not 0 <= value <= top:
            raise Sam2InputError(f"{name}={value} is outside the stack (0..{top})")
        return int(value)

    @staticmethod
    def _check_obj_id(obj_id) -> int:
        if isinstance(obj_id, bool) or not isinstance(obj_id, (int, np.integer)) or obj_id < 1:
            raise Sam2InputError(
                f"object ids are label values: integers >= 1 (0 is background), got {obj_id!r}"
            )
        if obj_id > MAX_OBJECT_ID:
            raise Sam2InputError(
                f"object id {obj_id} is too large: ids go up to {MAX_OBJECT_ID} (a 32-bit label image)"
            )
        return int(obj_id)

    def _check_points(self, points, labels):
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
            raise Sam2InputError(f"labels must be 1 (object) or 0 (background), got {np.unique(lab).tolist()}")
        inside = points_in_frame(pts, self.frame_shape)
        if not inside.all():
            bad = pts[~inside][0].tolist()
            raise Sam2InputError(
                f"point {bad} (row, col) lies outside the frame of shape {tuple(self.frame_shape)}: "
                "click on the image (coordinates are frame pixels, not world units)"
            )
        return pts, lab.astype(np.int64)

    def _new_track(self, obj_id: int) -> _Track:
        ad = self._adapter
        state = ad.new_state(frames=self._frames, cache=self.cache, frame_shape=self.frame_shape,
                             device=self.model.device, obj_id=obj_id)
        quality = np.full((self.n_frames, 2), np.nan, np.float32)
        return _Track(obj_id, state, cond=ad.cond_outputs(state), non_cond=ad.non_cond_outputs(state),
                      tracked=ad.tracked_frames(state), points=ad.point_inputs(state),
                      masks=ad.mask_inputs(state), quality=quality)

    def _push_undo(self, track: _Track | None, frame: int, obj_id: int | None = None) -> None:
        if track is None:
            self._remember(("frame", obj_id, frame, None))
        else:
            saved = {
                "track": track,
                "points": track.points.get(frame),
                "masks": track.masks.get(frame),
                "cond": track.cond.get(frame),
                "non_cond": track.non_cond.get(frame),
                "tracked": track.tracked.get(frame),
                "exact": track.exact_masks.get(frame),
                "binary": track.binary.get(frame),
                "prompts": list(track.prompts),
                "quality": track.quality[frame].copy(),
            }
            self._remember(("frame", track.obj_id, frame, saved))

    def _remember(self, entry) -> None:
        if self._undo_group is not None:  # inside add_label_image: one entry for the call
            self._undo_group.append(entry)
            return
        self._undo.append(entry)
        del self._undo[:-_UNDO_DEPTH]

    def _forget_last(self) -> None:
        (self._undo if self._undo_group is None else self._undo_group).pop()

    def _prompt(self, obj_id, frame, prompt, point_inputs=None, mask_inputs=None, refine=False,
                exact=None):
        """Run one prompt on one object's frame and store the result as a conditioning frame."""
        track = self._tracks.get(obj_id)
        self._push_undo(track, frame, obj_id)
        created = track is None
        if created:
            track = self._new_track(obj_id)
        st = track.state
        dev = self.model.device
        prev_logits = None
        if point_inputs is not None:
            pi = {"point_coords": point_inputs[0].to(dev), "point_labels": point_inputs[1].to(dev)}
            if refine:
                prev_logits = self._previous_logits(track, frame)
            mi = None
        else:
            pi, mi = None, mask_inputs
        # a prompt on a frame the object was tracked on is a correction: it is conditioned on
        # the memory around it and tracked in the same direction, like SAM 2's predictor
        is_init = frame not in track.tracked
        reverse = False if is_init else track.tracked[frame]["reverse"]
        try:
            with self.model.inference():
                out, iou = self._infer(track, frame, is_init, pi, mi, reverse, prev_logits)
                # the frame's memory is read only when another frame is tracked: it is encoded
                # then (_encode_pending), so that a click answers sooner and the clicks that
                # follow on the same frame do not run the memory encoder for nothing
                out["pending_vision"] = self._adapter.vision_features(st, frame)[0][-1]
                mask = None if mask_inputs is not None else self._upsample(out["pred_masks"])
        except BaseException:
            self._forget_last()  # nothing changed
            raise
        # commit: inputs, conditioning output, records
        if pi is not None:
            track.points[frame] = pi
            track.masks.pop(frame, None)
            track.exact_masks.pop(frame, None)
        else:
            track.masks[frame] = mi.to(torch.bool)  # a record (0/1): 1 byte a pixel, not 4
            track.points.pop(frame, None)
            track.exact_masks[frame] = exact
            mask = exact
        track.cond[frame] = out
        track.non_cond.pop(frame, None)
        self._record(track, frame, out, iou)
        # keep the history replayable and short: only the prompts that still count
        track.prompts = prompts_in_effect([*track.prompts, prompt])
        self._tracks[obj_id] = track
        return mask

    def _previous_logits(self, track: _Track, frame: int):
        out = track.cond.get(frame) or track.non_cond.get(frame)
        if out is not None:
            logits = out["pred_masks"]
        elif frame in track.binary:
            logits = self._binary_logits(track, frame)
        else:
            return None
        return torch.clamp(logits.to(self.model.device), -_PREV_LOGITS_CLAMP, _PREV_LOGITS_CLAMP)

    def _infer(self, track, frame, is_init, point_inputs, mask_inputs, reverse, prev_logits):
        """One object on one frame: transformers' ``_run_single_frame_inference``, plus the IoU."""
        ad = self._adapter
        st = track.state
        if not is_init:
            self._encode_pending(track)
        feats, pos = ad.vision_features(st, frame)
        high_res = ad.high_res_features(feats)
        if mask_inputs is not None:
            out, iou = ad.mask_as_output(feats, high_res, mask_inputs)
        else:
            pix = ad.condition_on_memory([st], frame, feats, pos, is_init=is_init,
                                         n_frames=self.n_frames, reverse=reverse)
            out, iou = ad.decode(pix, high_res, point_inputs=point_inputs, mask_logits=prev_logits,
                                 is_init=is_init)
        # with several candidate masks SAM 2 returns the one with the best predicted IoU
        return out, float(iou[0])

    def _encode_pending(self, track: _Track) -> None:
        """Encode the memories of the object's prompted frames that were put off (see _prompt)."""
        for frame, out in track.cond.items():
            if "pending_vision" in out:
                self._encode_memories(frame, [(track, out)], from_prompt=True, vision=out["pending_vision"])
                del out["pending_vision"]

    def _encode_memories(self, frame, items, from_prompt, vision=None):
        """Encode the new masks of several objects on one frame into memory, in one batch."""
        ad = self._adapter
        if not items or ad.num_maskmem == 0:
            return
        if vision is None:
            vision = ad.vision_features(items[0][0].state, frame)[0][-1]
        if len({tuple(out["object_score_logits"].shape) for _, out in items}) > 1:
            # some families (EdgeTAM) shape a mask prompt's scores unlike the decoder's: one by one
            for item in items:
                self._encode_memories(frame, [item], from_prompt, vision=vision)
            return
        high_res = torch.cat([out["high_res_masks"] for _, out in items], dim=0)
        scores = torch.cat([out["object_score_logits"] for _, out in items], dim=0)
        mem, pos = ad.encode_memory(vision, high_res, scores, from_prompt=from_prompt)
        if self.model.memory_dtype is not None:
            mem = mem.to(self.model.memory_dtype)
        dim = ad.memory_batch_dim
        for i, (_, out) in enumerate(items):
            out["maskmem_features"] = mem.narrow(dim, i, 1)
            p = pos.narrow(dim, i, 1)
            # the positional encoding depends only on the feature size: share one tensor
            if self._pos_enc is not None and self._pos_enc.shape == p.shape and torch.equal(self._pos_enc, p):
                p = self._pos_enc
            else:
                self._pos_enc = p = p.clone()
            out["maskmem_pos_enc"] = p
            # only the memory encoder reads the full-size masks, and it just did
            del out["high_res_masks"]

    def _track_frame(self, frame: int, obj_ids: list[int], reverse: bool) -> FrameMasks:
        tracks = [self._tracks[i] for i in obj_ids if i in self._tracks]  # some may be removed
        todo = [t for t in tracks if frame not in t.cond]
        if self.batch_objects:
            self._encode_pending_batched(todo)
        new = {}
        for group in self._groups(todo, frame, reverse):
            for track, out, iou in self._infer_group(group, frame, reverse):
                track.non_cond[frame] = out
                track.tracked[frame] = {"reverse": reverse}
                self._record(track, frame, out, iou)
                new[track.obj_id] = out
        items = [(self._tracks[i], out) for i, out in new.items()]
        step = self.max_batch if self.batch_objects else max(len(items), 1)
        for k in range(0, len(items), step):
            self._encode_memories(frame, items[k:k + step], from_prompt=False)
        for track, _ in items:
            self._prune(track, frame)
        # the frame's masks, upsampled in batches
        result = FrameMasks()
        upsample = [(t.obj_id, new[t.obj_id]["pred_masks"]) for t in tracks if t.obj_id in new]
        upsample += [(t.obj_id, t.cond[frame]["pred_masks"]) for t in tracks
                     if t.obj_id not in new and frame not in t.exact_masks]
        masks = {}
        for k in range(0, len(upsample), self.max_batch):
            chunk = upsample[k:k + self.max_batch]
            for (obj_id, _), m in zip(chunk, self._upsample_many([x for _, x in chunk])):
                masks[obj_id] = m
        for track in tracks:
            exact = track.exact_masks.get(frame) if track.obj_id not in new else None
            result[track.obj_id] = exact.copy() if exact is not None else masks[track.obj_id]
            q = track.quality[frame]
            result.scores[track.obj_id] = ObjectScore(float(q[0]), float(q[1]))
        return result

    def _groups(self, todo: list[_Track], frame: int, reverse: bool) -> list[list[_Track]]:
        """Objects tracked together on ``frame``: those whose memories SAM 2 reads alike."""
        if not self.batch_objects:
            return [[t] for t in todo]
        by_memory: dict[tuple, list[_Track]] = {}
        for t in todo:
            key = self._adapter.memory_signature(t.state, frame, reverse, self.n_frames)
            by_memory.setdefault(key, []).append(t)
        return [g[k:k + self.max_batch] for g in by_memory.values() for k in range(0, len(g), self.max_batch)]

    def _infer_group(self, group: list[_Track], frame: int, reverse: bool):
        """Track a group of objects on one frame: ``[(track, out, iou)]``."""
        if len(group) == 1:
            out, iou = self._infer(group[0], frame, False, None, None, reverse, None)
            return [(group[0], out, iou)]
        ad = self._adapter
        feats, pos = ad.vision_features(group[0].state, frame)
        pix = ad.condition_on_memory([t.state for t in group], frame, feats, pos, is_init=False,
                                     n_frames=self.n_frames, reverse=reverse)
        out, iou = ad.decode(pix, ad.high_res_features(feats, batch=len(group)))
        ious = iou.tolist()
        return [(t, {k: v[i:i + 1] for k, v in out.items()}, ious[i]) for i, t in enumerate(group)]

    def _encode_pending_batched(self, tracks: list[_Track]) -> None:
        """Encode the put-off memories of prompted frames (see _prompt), a batch per frame."""
        by_frame: dict[int, list] = {}
        for track in tracks:
            for frame, out in track.cond.items():
                if "pending_vision" in out:
                    by_frame.setdefault(frame, []).append((track, out))
        for frame, items in by_frame.items():
            for k in range(0, len(items), self.max_batch):
                chunk = items[k:k + self.max_batch]
                self._encode_memories(frame, chunk, from_prompt=True, vision=chunk[0][1]["pending_vision"])
                for _, out in chunk:
                    del out["pending_vision"]

    def _record(self, track: _Track, frame: int, out: dict, iou: float) -> None:
        presence = float(torch.sigmoid(out["object_score_logits"].float()).max())
        track.quality[frame] = (presence, iou)
        logits = out["pred_masks"]
        side = self.model.mask_size
        if logits.shape[-2:] != (side, side):  # SAM 3's mask prompts come at a quarter of the input
            logits = F.interpolate(logits.float(), size=(side, side), mode="bilinear", align_corners=False)
        low = (logits[0, 0] > 0).cpu().numpy()
        track.binary[frame] = np.packbits(low)

    def _binary_logits(self, track: _Track, frame: int):
        side = self.model.mask_size
        bits = np.unpackbits(track.binary[frame], count=side * side).reshape(1, 1, side, side)
        return torch.from_numpy(bits.astype(np.float32) * (2 * _BINARY_LOGIT) - _BINARY_LOGIT)

    def _prune(self, track: _Track, frame: int) -> None:
        """Drop tracking state SAM 2 will not read again (see ``keep_frames``)."""
        if self.keep_frames is None:
            return
        k = self.keep_frames
        anchors = list(track.cond)
        for f in list(track.non_cond):
            if abs(f - frame) <= k or any(abs(f - a) <= k for a in anchors):
                continue
            del track.non_cond[f]

    def _upsample_many(self, logits: list) -> list[np.ndarray]:
        """Several objects' low-resolution logits -> bool masks, in one interpolation."""
        if len(logits) == 1:
            return [self._upsample(logits[0])]
        x = torch.cat([t.to(torch.float32).reshape(1, 1, *t.shape[-2:]) for t in logits], dim=0)
        x = F.interpolate(x, size=tuple(self.frame_shape), mode="bilinear", align_corners=False)
        m = (x[:, 0] > 0).cpu().numpy()
        return list(m)

    def _upsample(self, low_res_logits) -> np.ndarray:
        """Low-resolution mask logits -> bool mask at the frame's size (as SAM 2's predictor)."""
        x = low_res_logits.to(torch.float32)
        if x.ndim == 2:
            x = x[None, None]
        x = F.interpolate(x, size=tuple(self.frame_shape), mode="bilinear", align_corners=False)
        return (x[0, 0] > 0).cpu().numpy()
