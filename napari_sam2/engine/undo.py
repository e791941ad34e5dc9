"""A session's undo history: what each undoable call changed, so that undo puts it back exactly.

Every ``add_*`` and ``clear_prompts`` call is a :class:`FrameEdit` (one object's frame, as it
was before), ``remove_object`` and ``remove_objects`` an :class:`ObjectRemoval` (whole
objects), and one
``add_label_image`` call a :class:`LabelImageSeeding` that holds the edits of all its objects,
so one undo reverts it whole.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from napari_sam2.engine.objects import FrameSnapshot, ObjectState

__all__ = ["FrameEdit", "ObjectRemoval", "LabelImageSeeding", "UndoEntry", "UndoHistory"]

#: Objects by id, as the session holds them (undo edits this dict).
Objects = dict[int, ObjectState]


@dataclass(frozen=True)
class FrameEdit:
    """A prompt added on, or cleared from, one object's frame."""

    obj_id: int
    frame: int
    #: the frame as it was; None when the call created the object
    before: FrameSnapshot | None

    def revert(self, objects: Objects) -> tuple[int, int]:
        """Put the frame back; returns ``(frame, obj_id)``."""
        if self.before is None:
            objects.pop(self.obj_id, None)
            return self.frame, self.obj_id
        # the object the edit saw, when the change removed it (its last prompt cleared)
        obj = objects.get(self.obj_id) or self.before.obj
        objects[self.obj_id] = obj
        obj.restore(self.before)
        return self.frame, self.obj_id


@dataclass(frozen=True)
class ObjectRemoval:
    """Objects removed with everything they held, by one call."""

    removed: tuple[ObjectState, ...]
    #: removed by ``remove_objects``: undone together, as ``(None, obj_ids)``
    together: bool = False

    def revert(self, objects: Objects) -> tuple[None, int] | tuple[None, tuple[int, ...]]:
        """Bring the objects back; returns ``(None, obj_id)``, or ``(None, obj_ids)`` if together."""
        for state in self.removed:
            objects[state.obj_id] = state
        ids = tuple(state.obj_id for state in self.removed)
        return (None, ids) if self.together else (None, ids[0])


@dataclass(frozen=True)
class LabelImageSeeding:
    """One ``add_label_image`` call: a mask prompt for each of its objects on one frame."""

    frame: int
    obj_ids: tuple[int, ...]
    edits: tuple[FrameEdit, ...]

    def revert(self, objects: Objects) -> tuple[int, tuple[int, ...]]:
        """Revert every object's edit; returns ``(frame, obj_ids)``."""
        for edit in reversed(self.edits):
            edit.revert(objects)
        return self.frame, self.obj_ids


#: One undoable call.
UndoEntry = FrameEdit | ObjectRemoval | LabelImageSeeding


class UndoHistory:
    """The last ``depth`` undoable calls of a session, newest last.

    Parameters
    ----------
    depth : int
        How many calls are remembered (older ones are forgotten).
    """

    def __init__(self, depth: int):
        self.depth = int(depth)
        self._entries: list[UndoEntry] = []
        self._seeding: list[FrameEdit] | None = None  # the edits of the add_label_image call running

    def __len__(self) -> int:
        return len(self._entries)

    def push(self, entry: UndoEntry) -> None:
        """Remember a change (inside :meth:`seeding`: as part of that call)."""
        if self._seeding is not None and isinstance(entry, FrameEdit):
            self._seeding.append(entry)
            return
        self._entries.append(entry)
        del self._entries[:-self.depth]

    def drop_last(self) -> None:
        """Forget the change just pushed (it failed, so nothing changed)."""
        (self._entries if self._seeding is None else self._seeding).pop()

    @contextlib.contextmanager
    def seeding(self, frame: int) -> Iterator[None]:
        """Collect the edits of one ``add_label_image`` call into one entry.

        Even if it fails half-way: the objects seeded so far stay, and one undo reverts them.
        """
        self._seeding = []
        try:
            yield
        finally:
            edits, self._seeding = self._seeding, None
            if edits:
                self.push(LabelImageSeeding(frame, tuple(e.obj_id for e in edits), tuple(edits)))

    def pop(self) -> UndoEntry | None:
        """The newest entry, removed from the history, or None when it is empty."""
        return self._entries.pop() if self._entries else None
