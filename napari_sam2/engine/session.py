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

The session checks what it is given (:mod:`~napari_sam2.engine.inputs`), keeps every object's
state (:mod:`~napari_sam2.engine.objects`) and an exact undo history
(:mod:`~napari_sam2.engine.undo`), and returns :mod:`~napari_sam2.engine.results`. The network is
run by :mod:`napari_sam2.engine.tracking`, step by step through :mod:`napari_sam2.engine.adapter`,
the one module that calls transformers' private methods; the session never touches them itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from napari_sam2.conversions import box_to_model_corners, rowcol_to_model_xy
from napari_sam2.engine.adapter import adapter_for
from napari_sam2.engine.cache import FeatureCache
from napari_sam2.engine.frames import FrameSource, LazyModelFrames
from napari_sam2.engine.heap import HeapTrimmer
from napari_sam2.engine.inputs import (
    LabelImageObjects,
    check_bound,
    check_box,
    check_frame,
    check_mask,
    check_obj_id,
    check_points,
)
from napari_sam2.engine.models import as_sam2_model
from napari_sam2.engine.objects import ObjectState
from napari_sam2.engine.results import FrameMasks, ObjectScore, compose_labels
from napari_sam2.engine.tracking import PlanStep, Tracker, default_max_batch, propagation_plan
from napari_sam2.engine.undo import FrameEdit, ObjectRemoval, UndoHistory
from napari_sam2.errors import Sam2InputError
from napari_sam2.prompts import Prompt, prompts_in_effect

if TYPE_CHECKING:
    import os

    import numpy.typing as npt

    from napari_sam2.arrays import LazyArray
    from napari_sam2.engine.frames import Channels, Contrast
    from napari_sam2.engine.models import Sam2Model, VideoNetwork
    from napari_sam2.engine.prefetch import Prefetcher

__all__ = ["Sam2Session", "ObjectScore", "FrameMasks"]

_UNDO_DEPTH = 50


class Sam2Session:
    """Segment and track objects through a stack with SAM 2.

    Parameters
    ----------
    model : Sam2Model or transformers.Sam2VideoModel
        From :func:`napari_sam2.load_model` (or a bare ``Sam2VideoModel``,
        ``Sam3TrackerVideoModel`` or ``EdgeTamVideoModel``).
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
        The most objects in one batch. Default: chosen from the free memory on a GPU; on a
        CPU or an Apple GPU from the image-feature size (16 at 256 px input, 8 at 512, 4 at
        1024).

    Attributes
    ----------
    model : Sam2Model
        The model the session runs.
    source : FrameSource
        The stack, read and preprocessed frame by frame.
    cache : FeatureCache
        The image features of recently used frames (and the disk store, if any).

    Examples
    --------
    >>> session = Sam2Session(model, stack)                        # doctest: +SKIP
    >>> mask = session.add_points(0, 1, [[120, 88]], [1])          # doctest: +SKIP
    >>> for frame, masks in session.propagate():                   # doctest: +SKIP
    ...     labels[frame][masks[1]] = 1
    """

    def __init__(self, model: Sam2Model | VideoNetwork, frames: LazyArray, *, channels: Channels = None,
                 contrast: Contrast = "auto", rgb: bool | None = None, keep_frames: int | None = 16,
                 cache_frames: int = 8, disk_cache: str | os.PathLike[str] | None = None,
                 prefetch: int = 0, encode_batch: int = 1, batch_objects: bool = True,
                 max_batch: int | None = None) -> None:
        self.model = as_sam2_model(model)
        adapter = adapter_for(self.model.network)
        self.source = FrameSource(frames, self.model.image_size, channels=channels,
                                  contrast=contrast, rgb=rgb, mean=self.model.image_mean,
                                  std=self.model.image_std)
        if keep_frames is not None and keep_frames < 1:
            raise Sam2InputError("keep_frames must be at least 1, or None to keep every frame")
        for name, value, low in (("encode_batch", encode_batch, 1), ("prefetch", prefetch, 0),
                                 ("max_batch", 1 if max_batch is None else max_batch, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise Sam2InputError(f"{name} must be an integer >= {low}, got {value!r}")
        store = None
        if disk_cache is not None:
            from napari_sam2.engine.cache import DiskFeatureStore

            store = DiskFeatureStore.for_session(disk_cache, self.source, self.model)
        self.cache = FeatureCache(cache_frames, store=store)
        self._frames: LazyModelFrames | Prefetcher = LazyModelFrames(self.source, self.model.device)
        self._prefetch: Prefetcher | None = None
        if prefetch or encode_batch > 1:
            from napari_sam2.engine.prefetch import Prefetcher

            try:
                self._prefetch = self._frames = Prefetcher(self.source, self.model, self.cache,
                                                           depth=prefetch, encode_batch=encode_batch)
            except ValueError as err:
                raise Sam2InputError(str(err)) from None
        self._tracker = Tracker(
            self.model, adapter, self._frames, self.cache, self.source.frame_shape,
            keep_frames=keep_frames,
            # a family whose tracker takes one object at a time tracks them one after the other
            batch_objects=bool(batch_objects) and adapter.tracks_batches,
            max_batch=int(max_batch) if max_batch is not None else default_max_batch(self.model),
        )
        self._objects: dict[int, ObjectState] = {}
        self._undo = UndoHistory(_UNDO_DEPTH)
        self._lock = threading.RLock()
        self._cancel_lock = threading.Lock()
        self._cancelled = 0  # cancel() count: a propagation stops when it changes
        # freed working memory goes back to the system during long runs (else RSS creeps up)
        self._heap = HeapTrimmer()

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
        return list(self._objects)

    @property
    def network(self) -> VideoNetwork:
        """The transformers network the session runs (``model.network``)."""
        return self.model.network

    @property
    def keep_frames(self) -> int | None:
        """Frames of tracking state kept around the current and prompted frames (None: all)."""
        return self._tracker.keep_frames

    @property
    def batch_objects(self) -> bool:
        """Whether objects are tracked together (False for a family that takes one at a time)."""
        return self._tracker.batch_objects

    @property
    def max_batch(self) -> int:
        """The most objects in one batch."""
        return self._tracker.max_batch

    def prompts(self, obj_id: int) -> list[Prompt]:
        """The object's prompts in the order they were given (for saving and replaying)."""
        return list(self._object(obj_id).prompts)

    def prompted_frames(self, obj_id: int) -> list[int]:
        """Frames where the object has prompts (its conditioning frames), sorted."""
        return sorted(self._object(obj_id).cond)

    def quality(self, obj_id: int) -> np.ndarray:
        """``(n_frames, 2)`` float array of presence and predicted IoU; NaN where not computed."""
        return self._object(obj_id).quality.copy()

    def score(self, frame: int, obj_id: int) -> ObjectScore | None:
        """The object's score on a frame, or None if it was not computed."""
        q = self._object(obj_id).quality[check_frame(frame, self.n_frames)]
        return None if np.isnan(q[0]) else ObjectScore(float(q[0]), float(q[1]))

    def mask(self, frame: int, obj_id: int) -> np.ndarray | None:
        """The last mask computed for the object on a frame, or None.

        Prompted frames and recently tracked frames give the exact mask; frames whose tracking
        state was pruned give the mask rebuilt from its low-resolution record.
        """
        frame = check_frame(frame, self.n_frames)
        obj = self._object(obj_id)
        with self._lock:
            return self._tracker.mask(obj, frame)

    # ------------------------------------------------------------------ prompts
    def add_points(self, frame: int, obj_id: int, points: npt.ArrayLike, labels: npt.ArrayLike, *,
                   replace: bool = False) -> np.ndarray:
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
        frame = check_frame(frame, self.n_frames)
        obj_id = check_obj_id(obj_id)
        pts, lab = check_points(points, labels, self.frame_shape)
        coords = torch.from_numpy(rowcol_to_model_xy(pts, self.frame_shape, self.model.image_size))
        coords = coords.view(1, 1, -1, 2)
        lab_t = torch.from_numpy(lab.astype(np.int32)).view(1, 1, -1)
        with self._lock:
            obj = self._objects.get(obj_id)
            existing = None if obj is None else obj.points.get(frame)
            if existing is not None and not replace:
                coords = torch.cat([existing["point_coords"].cpu(), coords], dim=2)
                lab_t = torch.cat([existing["point_labels"].cpu(), lab_t], dim=2)
            prompt = Prompt(frame, "points", points=pts, labels=lab, replace=replace)
            return self._prompt(obj_id, frame, prompt, points=(coords, lab_t), refine=not replace)

    def add_box(self, frame: int, obj_id: int, box: npt.ArrayLike) -> np.ndarray:
        """Prompt an object with a box ``[[row0, col0], [row1, col1]]`` (corners in any order).

        A box replaces the object's earlier clicks on that frame (SAM 2 reads the box first);
        clicks added afterwards refine it.

        Returns
        -------
        numpy.ndarray
            The object's mask on that frame, bool ``(H, W)``.
        """
        frame = check_frame(frame, self.n_frames)
        obj_id = check_obj_id(obj_id)
        b = check_box(box, frame, self.frame_shape)
        try:
            corners = box_to_model_corners(b, self.frame_shape, self.model.image_size)
        except ValueError as err:
            raise Sam2InputError(str(err)) from None
        coords = torch.from_numpy(corners).view(1, 1, 2, 2)
        lab_t = torch.tensor([[[2, 3]]], dtype=torch.int32)
        with self._lock:
            prompt = Prompt(frame, "box", box=b)
            return self._prompt(obj_id, frame, prompt, points=(coords, lab_t))

    def add_mask(self, frame: int, obj_id: int, mask: npt.ArrayLike) -> np.ndarray:
        """Prompt an object with a mask (e.g. a painted label or a Cellpose/StarDist result).

        SAM 2 takes a mask prompt as the truth on its frame: the same mask is returned here and
        on that frame during propagation.

        Parameters
        ----------
        frame : int
            Frame index.
        obj_id : int
            Object id (a label value, >= 1). A new id starts a new object.
        mask : array-like, bool (H, W)
            Nonzero pixels belong to the object.

        Returns
        -------
        numpy.ndarray
            The mask, bool ``(H, W)``.
        """
        frame = check_frame(frame, self.n_frames)
        obj_id = check_obj_id(obj_id)
        m = check_mask(mask, frame, obj_id, self.frame_shape)
        with self._lock:
            self._add_mask(frame, obj_id, m)
            return m.copy()

    def add_label_image(self, frame: int, labels: npt.ArrayLike,
                        ids: Sequence[int] | None = None) -> list[int]:
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
        frame = check_frame(frame, self.n_frames)
        found = LabelImageObjects(labels, frame, self.frame_shape, ids)
        done = []
        with self._lock, self._undo.seeding(frame):
            for obj_id in found.ids:
                self._add_mask(frame, obj_id, found.mask(obj_id))
                done.append(obj_id)
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
        frame = check_frame(frame, self.n_frames)
        with self._lock:
            return compose_labels(self.frame_shape, self._objects,
                                  lambda obj_id: self._tracker.mask_window(self._objects[obj_id], frame))

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
        self._prompt(obj_id, frame, Prompt(frame, "mask", mask=m), mask=(mt, m))

    def clear_prompts(self, frame: int, obj_id: int) -> None:
        """Remove an object's prompts on one frame; an object left without prompts is removed."""
        frame = check_frame(frame, self.n_frames)
        with self._lock:
            obj = self._object(obj_id)
            if not obj.has_prompt(frame):
                raise Sam2InputError(f"object {obj_id} has no prompt on frame {frame}")
            self._undo.push(FrameEdit(obj.obj_id, frame, obj.snapshot(frame)))
            obj.clear_frame(frame)
            if not obj.cond:
                del self._objects[obj.obj_id]

    def remove_object(self, obj_id: int) -> None:
        """Forget an object: its prompts, masks and memory. Other objects are untouched."""
        with self._lock:
            obj = self._object(obj_id)
            self._undo.push(ObjectRemoval((obj,)))
            del self._objects[obj.obj_id]

    def remove_objects(self, obj_ids: Sequence[int]) -> None:
        """Forget several objects as one step: one :meth:`undo` brings them all back.

        Every id is checked before any object goes (an unknown id removes nothing).
        """
        with self._lock:
            objs = tuple(self._object(i) for i in dict.fromkeys(int(i) for i in obj_ids))
            if not objs:
                return
            self._undo.push(ObjectRemoval(objs, together=True))
            for obj in objs:
                del self._objects[obj.obj_id]

    def undo(self) -> (tuple[int | None, int] | tuple[int, tuple[int, ...]]
                       | tuple[None, tuple[int, ...]] | None):
        """Revert the last ``add_*``, :meth:`clear_prompts`, :meth:`remove_object` or :meth:`remove_objects`.

        Returns
        -------
        (frame, obj_id) or None
            Where the reverted change was (``frame`` is None for a removed object), or None
            when there is nothing to undo. Undoing an :meth:`add_label_image` call reverts all
            its objects at once and gives ``(frame, ids)`` with the tuple of their ids; undoing
            :meth:`remove_objects` gives ``(None, ids)``.
        """
        with self._lock:
            entry = self._undo.pop()
            return None if entry is None else entry.revert(self._objects)

    # ------------------------------------------------------------------ propagation
    def plan_propagation(self, direction: str = "both", start: int | None = None,
                         stop: int | None = None, obj_ids: Sequence[int] | None = None) -> list[int]:
        """The frames :meth:`propagate` will yield, in order (for progress bars)."""
        with self._lock:
            return [step.frame for step in self._plan(direction, start, stop, obj_ids)]

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

    def _run_plan(self, plan: list[PlanStep], cancelled: int) -> Iterator[tuple[int, FrameMasks]]:
        if self._prefetch is not None:
            # the frames whose image features will be looked up, in order (not prompted ones)
            objects = self._objects
            self._prefetch.start([step.frame for step in plan if any(
                i in objects and step.frame not in objects[i].cond for i in step.obj_ids)])
        try:
            for reverse, frame, obj_ids in plan:
                if self._cancelled != cancelled:
                    return
                with self._lock, self.model.inference():
                    result = self._step_frame(frame, obj_ids, reverse)
                self._heap.maybe()
                yield frame, result
        finally:
            if self._prefetch is not None:
                self._prefetch.stop()
            self._heap.now()

    def _plan(self, direction: str, start: int | None, stop: int | None,
              obj_ids: Sequence[int] | None) -> list[PlanStep]:
        if direction not in ("both", "forward", "backward"):
            raise Sam2InputError(f"direction must be 'both', 'forward' or 'backward', got {direction!r}")
        lo = 0 if start is None else check_bound(start, "start", self.n_frames)
        hi = self.n_frames if stop is None else check_bound(stop, "stop", self.n_frames, upper=True)
        if hi <= lo:
            raise Sam2InputError(f"stop ({hi}) must be greater than start ({lo})")
        ids = self.objects if obj_ids is None else [self._object(i).obj_id for i in obj_ids]
        if not ids:
            raise Sam2InputError("there is nothing to propagate: add a prompt (point, box or mask) first")
        prompted = {obj_id: sorted(self._objects[obj_id].cond) for obj_id in ids}
        return propagation_plan(prompted, direction, lo, hi)

    # ------------------------------------------------------------------ automatic masks
    def segment_everything(self, frame: int, *, points_per_side: int = 32, pred_iou_thresh: float = 0.8,
                           stability_score_thresh: float = 0.9, min_area: int = 64,
                           max_area: int | None = None, crop_n_layers: int = 0,
                           progress: Callable[[int, int], object] | None = None,
                           **options: Any) -> np.ndarray:
        """Find every object on one frame: SAM 2's automatic mask generation, as labels.

        A grid of point prompts runs through SAM 2's decoder on the frame's image features
        (encoded once, shared with tracking); masks are filtered by predicted IoU and
        stability, de-duplicated, cleaned of small holes and islands, and painted without
        overlaps (smaller objects on top). The session's objects, prompts and undo history are
        not touched: review or edit the result, then pass it to :meth:`add_label_image`.

        Parameters
        ----------
        frame : int
            Frame index.
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

        frame = check_frame(frame, self.n_frames)
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
    def _object(self, obj_id: Any) -> ObjectState:
        """The object with that id, or a Sam2InputError that lists the ids there are."""
        try:
            return self._objects[int(obj_id)]
        except (KeyError, TypeError, ValueError):
            known = ", ".join(map(str, self._objects)) or "none yet"
            raise Sam2InputError(f"unknown object id {obj_id!r} (objects: {known})") from None

    def _prompt(self, obj_id: int, frame: int, prompt: Prompt, *,
                points: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: tuple[torch.Tensor, np.ndarray] | None = None, refine: bool = False) -> np.ndarray:
        """Run one prompt on one object's frame and store the result as a conditioning frame.

        ``points``: coordinates and labels at model size (clicks or a box); or ``mask``: the
        mask at model size and the user's mask (returned unchanged on that frame). Returns the
        frame's mask.
        """
        obj = self._objects.get(obj_id)
        self._undo.push(FrameEdit(obj_id, frame, None if obj is None else obj.snapshot(frame)))
        if obj is None:
            obj = self._tracker.new_object(obj_id)
        dev = self.model.device
        pi = None
        if points is not None:
            pi = {"point_coords": points[0].to(dev), "point_labels": points[1].to(dev)}
        try:
            with self.model.inference():
                out, iou = self._tracker.segment_prompt(obj, frame, point_inputs=pi,
                                                        mask_inputs=None if mask is None else mask[0],
                                                        refine=refine)
                result = self._tracker.upsample(out["pred_masks"]) if mask is None else mask[1]
        except BaseException:
            self._undo.drop_last()  # nothing changed
            raise
        # commit: inputs, conditioning output, records
        if mask is None:
            obj.points[frame] = pi
            obj.masks.pop(frame, None)
            obj.exact_masks.pop(frame, None)
        else:
            obj.masks[frame] = mask[0].to(torch.bool)  # a record (0/1): 1 byte a pixel, not 4
            obj.points.pop(frame, None)
            obj.exact_masks[frame] = mask[1]
        obj.cond[frame] = out
        obj.non_cond.pop(frame, None)
        self._tracker.record(obj, frame, out, iou)
        # keep the history replayable and short: only the prompts that still count
        obj.prompts = prompts_in_effect([*obj.prompts, prompt])
        self._objects[obj_id] = obj
        return result

    def _step_frame(self, frame: int, obj_ids: list[int], reverse: bool) -> FrameMasks:
        """One frame of a propagation for the objects planned on it (those still there)."""
        objs = [self._objects[i] for i in obj_ids if i in self._objects]  # some may be removed
        return self._tracker.step_frame(objs, frame, reverse)
