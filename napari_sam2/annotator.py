"""The annotator's state and rules, without Qt or napari: what the dock drives.

:class:`Annotator` holds what an annotation session is made of (the model, the engine session
and the stack layout, the label array the masks go into, the objects and the active one, the undo
history of label writes) and the rules for changing it: a prompt's mask is painted from what the
engine returned, a propagated frame is prepared (cropped to the box that changes) where the work
runs and applied where the labels live, undo and revert put back exactly the pixels they changed.

The Qt dock (:mod:`napari_sam2._qt.widget`) keeps only widgets, signals and workers; a test or a
script can drive an :class:`Annotator` with no display at all.
"""

from __future__ import annotations

import time
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from napari_sam2.label_edits import (
    EditRun,
    FrameEdit,
    box_slices,
    label_boxes,
    mask_box,
    paint_masks,
    paint_plan,
    shifted_boxes,
    union_box,
)

if TYPE_CHECKING:
    from napari_sam2.engine.models import Sam2Model
    from napari_sam2.engine.session import Sam2Session
    from napari_sam2.stack_layout import StackLayout

__all__ = ["Annotator", "FrameWrite", "ProgressClock", "Unseeding"]

#: how many label writes (prompts, runs) can be undone
UNDO_DEPTH = 50


@dataclass
class FrameWrite:
    """A frame's new masks, cropped to the region that can change, and the region painted.

    ``region`` is ``(row slice, column slice)`` of the frame, or None when nothing changes;
    ``new`` is what the region holds once written and ``edit`` how to undo it (None: no change),
    both computed where the work ran; ``epoch`` tells whether the labels changed since, and
    ``generation`` whether another write of the same frame was applied since. ``index`` is the
    label plane it was prepared for: it lands there even if the layout changed meanwhile (the
    user moved to another slice of a 4-D stack while a propagated frame was on its way).
    ``into``: the label array it goes into when that is not the current one (an undo or Delete
    of masks written before the user chose another target layer); painted from ``masks`` there.
    ``frame`` is only read when ``index`` is None (a Delete's writes into such an array: -1).
    """

    frame: int
    masks: dict
    region: tuple | None
    new: np.ndarray | None = None
    edit: FrameEdit | None = None
    boxes: dict | None = None
    epoch: int = -1
    generation: int = -1
    index: tuple | None = None
    into: np.ndarray | None = None


@dataclass
class Unseeding:
    """A seeding taken back by the engine's undo, with the label writes that follow from it.

    ``gone``: the objects the seeding had made (those it re-prompted stay, their earlier
    prompts back); ``writes``: their pixels cleared on the frames a propagation gave them
    since, prepared in the worker. The seeded frame itself is put back as it was before the
    seeding (:meth:`Annotator.finish_unseeding`), so labels that were there stay.
    """

    frame: int
    index: tuple
    gone: list
    writes: list


def _plane(index: tuple) -> tuple:
    """A label plane's index (ints, then the spatial slices) as a dict key."""
    return tuple(None if isinstance(i, slice) else int(i) for i in index)


class Annotator:
    """Objects, label writes and undo for one image stack (no Qt, no napari).

    Parameters
    ----------
    labels : numpy.ndarray, optional
        The label array masks are painted into (a napari Labels layer's data).
    """

    def __init__(self, labels: np.ndarray | None = None):
        self.model: Sam2Model | None = None
        self.session: Sam2Session | None = None
        self.layout: StackLayout | None = None
        self.objects: dict[int, str] = {}
        self.active_id: int | None = None
        self.runs: list[EditRun] = []  # undo history of label writes, newest last
        # deleted objects: their name and the run that took their pixels (for an undo)
        self.deleted: dict[int, tuple[str, EditRun]] = {}
        # label plane (see _plane) -> {obj id: box of its pixels}: per plane, not per frame, as
        # the frames of a 4-D stack tracked at one z and then at another are other planes
        self._boxes: dict[tuple, dict[int, tuple | None]] = {}
        # bumped whenever the labels change other than through prepare() + apply(): a write
        # prepared before then is painted again from its masks
        self.epoch = 0
        # frame -> writes applied to it: a write prepared before another write of its frame was
        # applied (a frame yielded twice by "both", prepared while the first waits for the GUI
        # thread) is painted again from its masks, or it would paint over the other's pixels
        self._applied: dict[tuple, int] = {}
        self.labels: np.ndarray | None = None
        # label plane -> {obj id: (a weak reference to) the label array its mask there was last
        # written into}: after the user chose another target layer, an undo or a Delete goes
        # where the object's pixels are, not into the new target (maybe the user's own labels)
        self._written: dict[tuple, dict[int, weakref.ref]] = {}
        # an upper bound of the highest id in the labels (None: not known, look once); kept up
        # to date by the writes and the user's paint strokes, so that a new object does not
        # scan the whole label volume on the GUI thread (0.9 GB at 12 frames of 6000 x 6000)
        self._max_label: int | None = None
        self.set_labels(labels)

    # ------------------------------------------------------------------ labels and objects
    def _label_array(self) -> np.ndarray:
        """The labels painted into; an error that says what to do when there are none yet."""
        if self.labels is None:
            raise RuntimeError("the annotator has no label array yet: call set_labels() first")
        return self.labels

    def _stack_layout(self) -> StackLayout:
        """The image's layout; an error that says what to do when there is none yet."""
        if self.layout is None:
            raise RuntimeError("the annotator has no stack layout yet: set .layout to the image's")
        return self.layout

    def set_labels(self, labels: np.ndarray | None, highest: int | None = None) -> None:
        """Write into another label array (its objects' whereabouts are looked up again).

        ``highest``: its highest id when known (0 for a new, empty array); else it is looked up
        the first time a new object needs a free id.
        """
        self.labels = labels
        self._boxes.clear()
        self._max_label = None if highest is None else int(highest)
        self.epoch += 1

    def forget_where(self, frame: int | None = None) -> None:
        """Someone else changed the labels of ``frame`` (all frames when None): look again."""
        self.epoch += 1
        if frame is None or self.layout is None:
            self._boxes.clear()
            self._max_label = None
        else:
            self._boxes.pop(_plane(self.layout.index(int(frame))), None)

    def labels_painted(self, values=None) -> None:
        """The user painted (or erased) the labels with ``values``: look again where objects are.

        ``values``: the ids painted, when known (else the highest id is looked up again).
        """
        self.epoch += 1
        self._boxes.clear()
        if values is None:
            self._max_label = None
        else:
            self._note_ids(values)

    def _note_ids(self, values) -> None:
        """Ids just written into the labels (keeps the highest id known without a scan)."""
        if self._max_label is not None:
            vals = [int(np.max(v)) for v in values if np.size(v)]
            self._max_label = max([self._max_label, *vals])

    def sam_ids(self) -> set[int]:
        """Ids of every SAM 2 object: the dock's and the engine's."""
        ids = set(self.objects)
        if self.session is not None:
            ids |= set(self.session.objects)
        return ids

    def next_free_id(self) -> int:
        """One more than the highest id among the objects and the labels."""
        used = max([0, *self.objects])
        if self.labels is not None and self.labels.size:
            if self._max_label is None:
                self._max_label = int(np.max(self.labels))
            used = max(used, self._max_label)
        return used + 1

    def add_object(self, name: str | None = None, obj_id: int | None = None) -> int:
        """Add an object (the next free label id unless given) and make it the active one."""
        obj_id = self.next_free_id() if obj_id is None else int(obj_id)
        self.objects[obj_id] = name or f"object {obj_id}"
        self.active_id = obj_id
        return obj_id

    def ensure_active(self) -> int:
        """The active object's id, adding an object first if there is none."""
        return self.active_id if self.active_id is not None else self.add_object()

    def delete_objects(self, obj_ids) -> EditRun:
        """Remove objects: their memory in the engine and their pixels (one undoable run)."""
        obj_ids = [int(i) for i in obj_ids if int(i) in self.objects]
        return self.finish_delete(obj_ids, self.prepare_delete(obj_ids))

    def prepare_delete(self, obj_ids, session: Sam2Session | None = None,
                       layout: StackLayout | None = None) -> list[FrameWrite]:
        """Worker side of :meth:`delete_objects`.

        Forget the objects in the engine and prepare the frames that lose their pixels (the
        labels are only read). ``session`` and ``layout``: those of the moment the user deleted
        (default: the current ones). With no layout (the session ended with its image), every
        plane of the labels loses the objects' pixels.
        """
        obj_ids = [int(i) for i in obj_ids]
        session, layout = session or self.session, layout or self.layout
        if session is not None:  # one step of the engine's undo, however many objects
            session.remove_objects([i for i in obj_ids if i in session.objects])
        if self.labels is None or not obj_ids:
            return []
        empty = np.zeros(self.labels.shape[-2:], bool)
        layouts = [layout] if layout is not None else self._every_plane()
        writes = [self.prepare(f, {i: empty for i in obj_ids}, layout=lay)
                  for lay in layouts for f in range(lay.n_frames)]
        # and out of the layers the objects were written into before another target was chosen
        for plane in list(self._written):
            index = tuple(slice(None) if i is None else i for i in plane)
            for array, ids in self._owners(index, [i for i in obj_ids if i in self._written[plane]]):
                if array is not None:
                    writes.append(self._prepare_into(-1, index, {i: empty for i in ids}, array))
        return [w for w in writes if w.region is not None]

    def _every_plane(self) -> list[StackLayout]:
        """Layouts that together cover every 2-D plane of the labels (frames along axis 0)."""
        shape = tuple(self._label_array().shape)
        others = list(range(1, len(shape) - 2))
        from napari_sam2.stack_layout import StackLayout

        return [StackLayout(shape, video_axis=0, fixed=dict(zip(others, idx)))
                for idx in np.ndindex(*(shape[a] for a in others))]

    def finish_delete(self, obj_ids, writes) -> EditRun:
        """GUI side of :meth:`delete_objects`: write the prepared frames, drop the objects."""
        obj_ids = [int(i) for i in obj_ids]
        run = EditRun("delete " + ", ".join(f"object {i}" for i in obj_ids))
        run.edits = [e for e in map(self.apply, writes) if e is not None]
        for obj_id in obj_ids:
            self.deleted[obj_id] = (self._drop(obj_id), run)
        self.push_run(run)
        return run

    def _drop(self, obj_id: int) -> str:
        """Forget an object of the list (no longer active); returns its name."""
        if self.active_id == obj_id:
            self.active_id = None
        return self.objects.pop(obj_id, f"object {obj_id}")

    def undelete(self, obj_ids) -> tuple[list[str], list[FrameEdit]]:
        """GUI side of undoing a Delete (the engine has the objects back): names and pixels.

        Only the pixels the Delete took from these objects come back: each edit of the Delete
        puts back, in one pass, the pixels of those of its objects that come back. Returns their
        names and the edits whose regions changed (to show them).
        """
        names: list[str] = []
        by_run: dict[int, tuple[EditRun, list[int]]] = {}
        for obj_id in (int(i) for i in obj_ids):
            name, run = self.deleted.pop(obj_id, (f"object {obj_id}", None))
            self.objects[obj_id] = name
            names.append(name)
            if run is not None:
                by_run.setdefault(id(run), (run, []))[1].append(obj_id)
        edits: list[FrameEdit] = []
        for run, ids in by_run.values():
            for edit in run.edits:
                edit.undo_ids(edit.target if edit.target is not None else self._label_array(), ids)
                known = self._boxes.get(_plane(edit.index), {})
                for obj_id in ids:  # looked up again when needed
                    known.pop(obj_id, None)
                edits.append(edit)
        if edits:
            self.epoch += 1
        return names, edits

    # ------------------------------------------------------------------ painting
    def _where(self, index: tuple, obj_ids) -> dict:
        """Boxes of the objects' current pixels on a label plane (looked up once, then remembered)."""
        known = self._boxes.setdefault(_plane(index), {})
        missing = [i for i in obj_ids if i not in known]
        if missing:
            known.update(label_boxes(self._label_array()[index], missing))
        return {i: known[i] for i in obj_ids}

    def prepare(self, frame: int, masks: dict, within: dict | None = None,
                layout: StackLayout | None = None) -> FrameWrite:
        """Crop ``{obj id: bool (H, W) mask}`` to the region that changes and paint it aside.

        Only reads the labels: it runs in the worker thread, so that the GUI thread only copies
        the painted region in (:meth:`apply`), whatever the frame size. ``within``: boxes known
        to hold each mask's pixels (the engine's ``FrameMasks.boxes``), so only those are scanned.
        ``layout``: the stack layout of the session that computed the masks, when the work may
        outlive it (a propagation); by default the current one.
        """
        frame = int(frame)
        index = (layout or self._stack_layout()).index(frame)
        epoch, generation = self.epoch, self._applied.get(_plane(index), 0)
        ids = sorted(int(i) for i in masks)
        within = within or {}
        boxes = {i: mask_box(masks[i], within.get(i)) for i in ids}
        old = self._where(index, ids)
        box = union_box(*boxes.values(), *old.values())
        if box is None:
            return FrameWrite(frame, {}, None, epoch=epoch, generation=generation, index=index)
        region = box_slices(box)
        crops = {i: np.asarray(masks[i], bool)[region] for i in ids}
        # read in place, a block at a time (no copy of the region: 72 MB at 6000 x 6000 uint16)
        changed, held, new = paint_plan(self._label_array()[index][region], crops, self.sam_ids(),
                                        shifted_boxes(boxes, region))
        edit = FrameEdit.of(index, changed, held, region)
        return FrameWrite(frame, crops, region, new, edit, boxes, epoch, generation, index)

    def _prepare_into(self, frame: int, index: tuple, masks: dict, into: np.ndarray) -> FrameWrite:
        """:meth:`prepare` for another label array than the current one (see :meth:`_owners`).

        Rare, so the plane is scanned for the objects' pixels.
        """
        ids = sorted(int(i) for i in masks)
        boxes = [mask_box(masks[i]) for i in ids]
        box = union_box(*boxes, *label_boxes(into[index], ids).values())
        if box is None:
            return FrameWrite(frame, {}, None, index=index, into=into)
        region = box_slices(box)
        crops = {i: np.asarray(masks[i], bool)[region] for i in ids}
        return FrameWrite(frame, crops, region, index=index, into=into)

    def _note_written(self, plane: tuple, ids, where: weakref.ref) -> None:
        """Remember that the masks of ``ids`` on a plane were written into ``where``."""
        written = self._written.setdefault(plane, {})
        for obj_id in ids:
            written[int(obj_id)] = where

    def _owners(self, index: tuple, obj_ids) -> list[tuple[np.ndarray | None, list[int]]]:
        """The objects grouped by the label array their pixels on a plane are in.

        ``None`` stands for the current labels (also for objects this annotator never wrote
        there); an array the user has since chosen away from (their masks were written before
        another target layer was chosen) is named. Objects whose array is gone (its layer
        deleted) are left out: there is nothing to change.
        """
        written = self._written.get(_plane(index), {})
        groups: dict[int, tuple[np.ndarray | None, list[int]]] = {}
        for obj_id in obj_ids:
            ref = written.get(int(obj_id))
            array = None if ref is None else ref()
            if ref is not None and array is None:
                continue  # written into an array no longer held anywhere
            if array is self.labels:
                array = None
            groups.setdefault(id(array), (array, []))[1].append(int(obj_id))
        return list(groups.values())

    def _prepare_owned(self, frame: int, masks: dict, layout: StackLayout) -> list[FrameWrite]:
        """Prepare masks for the label arrays their objects' pixels are in (see :meth:`_owners`)."""
        index = layout.index(frame)
        return [self.prepare(frame, {i: masks[i] for i in ids}, layout=layout) if array is None
                else self._prepare_into(frame, index, {i: masks[i] for i in ids}, array)
                for array, ids in self._owners(index, masks)]

    def apply(self, write: FrameWrite) -> FrameEdit | None:
        """Write a prepared frame into the labels (on the thread that owns them)."""
        if write.region is None:
            return None
        index = write.index if write.index is not None else self._stack_layout().index(write.frame)
        plane = _plane(index)
        if write.into is not None and write.into is not self.labels:  # rare: painted afresh
            edit = paint_masks(write.into, index, write.masks, self.sam_ids(), region=write.region)
            if edit is not None:
                edit.target = write.into
            self._note_written(plane, write.masks, weakref.ref(write.into))
            return edit
        labels = self._label_array()
        generation = self._applied.get(plane, 0)
        self._applied[plane] = generation + 1
        if write.epoch == self.epoch and write.generation == generation and write.new is not None:
            edit = write.edit
            if edit is not None:  # one plain copy (see paint_plan)
                labels[index][write.region] = write.new
        else:  # the labels changed since it was prepared: paint from the masks again
            edit = paint_masks(labels, index, write.masks, self.sam_ids(), region=write.region)
        if edit is not None:
            edit.target = labels
        if edit is not None and write.masks and self._max_label is not None:
            self._max_label = max(self._max_label, max(int(i) for i in write.masks))
        self._note_written(plane, write.masks, weakref.ref(labels))
        known = self._boxes.setdefault(plane, {})
        for obj_id, b in (write.boxes or {i: mask_box(m) for i, m in write.masks.items()}).items():
            known[obj_id] = b
        if edit is not None:  # a higher id may have kept pixels of a lower one: look again then
            for obj_id in self.sam_ids() - set(write.masks):
                known.pop(obj_id, None)
        return edit

    def prompt(self, frame: int, obj_id: int, call, session: Sam2Session | None = None,
               layout: StackLayout | None = None) -> FrameWrite:
        """Worker side of a prompt: run the engine ``call(session)`` and prepare its mask.

        ``call`` returns the mask the engine computed for the prompt (``add_points``,
        ``add_box``, ``add_mask``), which is what gets painted; when it returns None (a cleared
        prompt) the engine's remaining mask for that frame is painted (maybe nothing).
        ``session`` and ``layout``: those the prompt was made for (default: the current ones).
        """
        session = session or self.session
        mask = call(session)
        if mask is None:
            mask = self.engine_mask(frame, obj_id, session)
        return self.prepare(frame, {obj_id: np.asarray(mask, bool)}, layout=layout)

    def commit(self, write: FrameWrite, label: str) -> FrameEdit | None:
        """GUI side of a prompt (or seed, or undo): write a prepared frame as one undoable step."""
        edit = self.apply(write)
        self.push_run(EditRun(label, [edit] if edit is not None else []))
        return edit

    def paint(self, frame: int, masks: dict, label: str) -> EditRun:
        """Paint masks on one frame as one undoable step (a prompt, an undo, a loaded session)."""
        edit = self.apply(self.prepare(frame, masks))
        run = EditRun(label, [edit] if edit is not None else [])
        self.push_run(run)
        return run

    def engine_mask(self, frame: int, obj_id: int, session: Sam2Session | None = None) -> np.ndarray:
        """The engine's mask of an object on a frame (empty when it has none)."""
        session = session or self.session
        if session is None:
            return np.zeros(self._label_array().shape[-2:], bool)
        mask = session.mask(frame, obj_id) if obj_id in session.objects else None
        return np.zeros(session.frame_shape, bool) if mask is None else mask

    def push_run(self, run: EditRun) -> None:
        """Keep a run in the undo history (if it changed anything), at most UNDO_DEPTH of them."""
        if run.edits:
            self.runs.append(run)
            del self.runs[:-UNDO_DEPTH]

    # ------------------------------------------------------------------ undo
    def undo_prompt(self):
        """Undo the engine's last prompt and repaint its frame; ``(frame, obj id)`` or None."""
        res, write = self.undo_prompt_prepared()
        if isinstance(write, Unseeding):
            self.finish_unseeding(write)
        elif write is not None:
            self.commit(write, "undo")
        return res

    def undo_prompt_prepared(self, session: Sam2Session | None = None, layout: StackLayout | None = None):
        """The engine's undo and the frame's new masks, prepared (worker side of undo_prompt).

        Returns ``(engine result, FrameWrite)``; for a seeding, ``(engine result, Unseeding)``
        (finish it with :meth:`finish_unseeding`). ``session`` and ``layout``: those of the
        moment the user asked (default: the current ones).
        """
        session, layout = session or self.session, layout or self.layout
        if session is None:
            return None, None
        # where each object was tracked, read before the undo: a seeding's objects lose their
        # pixels there (what a propagation gave them), and on no other frame
        tracked = {i: np.flatnonzero(~np.isnan(session.quality(i)[:, 0])) for i in session.objects}
        res = session.undo()
        if res is None or res[0] is None:
            return res, None
        frame, undone = int(res[0]), res[1]
        lay = layout or self._stack_layout()
        if isinstance(undone, tuple):  # a seeding: all its objects
            gone = [int(i) for i in undone if i not in session.objects]
            frames = sorted({int(f) for i in gone for f in tracked.get(i, ()) if f != frame})
            empty = np.zeros(session.frame_shape, bool)
            writes = [w for f in frames for w in self._prepare_owned(f, {i: empty for i in gone}, lay)]
            return res, Unseeding(frame, lay.index(frame), gone, [w for w in writes if w.region is not None])
        # into the layer the object's mask on that frame is in (the user may have chosen
        # another target layer since the prompt: the undo stays out of it)
        writes = self._prepare_owned(frame, {undone: self.engine_mask(frame, undone, session)}, lay)
        return res, writes[0] if writes else None

    def finish_unseeding(self, unseeding: Unseeding) -> list[FrameEdit]:
        """GUI side of a seeding's undo: the seeded frame as it was, the tracked pixels gone.

        Returns the edits made (to show them).
        """
        run = EditRun("undo seeding", [e for e in map(self.apply, unseeding.writes) if e is not None])
        shown = list(run.edits)
        plane = _plane(unseeding.index)
        for i in range(len(self.runs) - 1, -1, -1):  # the seeding's own write, if it changed pixels
            seed = self.runs[i]
            if seed.label == "seed" and any(_plane(e.index) == plane for e in seed.edits):
                self.runs.pop(i)
                self.undo_run(seed)
                shown += seed.edits
                break
        for obj_id in unseeding.gone:
            self._drop(obj_id)
        self.push_run(run)
        return shown

    def revert_last_run(self) -> EditRun | None:
        """Put the labels back exactly as they were before the last propagation run."""
        run = self.take_last_run()
        if run is not None:
            self.undo_run(run)
        return run

    def take_last_run(self) -> EditRun | None:
        """Remove the last propagation run from the history (undo it with :meth:`undo_run`)."""
        for i in range(len(self.runs) - 1, -1, -1):
            if self.runs[i].label == "propagation":
                return self.runs.pop(i)
        return None

    def undo_run(self, run: EditRun) -> None:
        """Put back the pixels a run changed (may run in a worker: a masked copy per frame)."""
        run.undo(self._label_array())
        self.epoch += 1
        for edit in run.edits:
            self._boxes.pop(_plane(edit.index), None)

    def frames_of(self, run: EditRun) -> list[int]:
        """The frame numbers a run wrote."""
        if self.layout is None or self.layout.is_single_image:
            return [0] * bool(run.edits)
        return sorted({int(e.index[self.layout.video_axis]) for e in run.edits})


class ProgressClock:
    """Frames done, rate and time left of a long task (the text of the dock's progress bar)."""

    def __init__(self, total: int, clock=time.monotonic):
        self.total = int(total)
        self.done = 0
        self._clock = clock
        self._start = clock()

    def step(self, n: int = 1) -> None:
        """Count ``n`` more items done."""
        self.done += int(n)

    @property
    def elapsed(self) -> float:
        """Seconds since the clock started."""
        return self._clock() - self._start

    @property
    def rate(self) -> float:
        """Items per second so far (0 before the first)."""
        t = self.elapsed
        return self.done / t if self.done and t > 0 else 0.0

    @property
    def left(self) -> float | None:
        """Seconds left at the rate so far (None before the first item)."""
        r = self.rate
        return (self.total - self.done) / r if r > 0 else None

    def text(self, unit: str = "frames") -> str:
        """``"k / n frames, rate, time left"`` for a progress bar."""
        parts = [f"{self.done} / {self.total} {unit}"]
        if self.rate > 0:
            parts.append(f"{self.rate:.1f} {unit}/s" if self.rate >= 1 else f"{1 / self.rate:.1f} s each")
            left = self.left
            if left is not None and self.done < self.total:
                parts.append(f"{_duration(left)} left")
        return " · ".join(parts)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    m, s = divmod(seconds, 60)
    if m < 60:
        return f"{m} min {s:02d} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"
