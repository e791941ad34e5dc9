"""The dock's object list: new, select (also by Alt-click on a mask), rename, delete.

The objects themselves (ids, names, the active one) live in the Qt-free
:class:`~napari_sam2.annotator.Annotator`; the list shows each id with its label colour.
Deleting runs like undo: the engine forgets the objects and the frames losing their pixels are
prepared in the worker; the GUI thread copies the prepared crops in and refreshes the layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import QItemSelectionModel, Qt
from qtpy.QtWidgets import QListWidgetItem

if TYPE_CHECKING:
    from napari_sam2._qt.dock_host import DockHost
else:
    DockHost = object  # the sections' shared state is declared for type checkers only

__all__ = ["ObjectList"]

ID_ROLE = Qt.ItemDataRole.UserRole
#: selecting an object from code selects it alone (the list allows several, for Delete)
ONLY = QItemSelectionModel.SelectionFlag.ClearAndSelect


def shown_name(obj_id: int, name: str) -> str:
    """An object's line in the list: its name, after its id when the name does not say it."""
    return name if name == f"object {obj_id}" else f"{obj_id}: {name}"


class ObjectList(DockHost):
    """The Objects section's list of :class:`~napari_sam2._qt.widget.Sam2Widget`."""

    def new_object(self, name: str | None = None) -> int:
        """Add an object with the next free label id, make it active, get ready for clicks."""
        if self.model is not None and self.image_layer is not None:
            self.ensure_session()  # the prompt layers exist from here on
        obj_id = self.core.add_object(name)
        self._add_object_item(obj_id, self.core.objects[obj_id])
        if self.prompts.points is not None and self.prompts.points in self.viewer.layers:
            self.prompts.select_points()
        self.say(f"{self.core.objects[obj_id]}: click on it")
        return obj_id

    def ensure_active(self) -> int:
        """The active object's id (a new object when there is none)."""
        obj_id = self.active_id
        if obj_id is None:
            obj_id = self.new_object()  # which makes it the active object
        return obj_id

    def _add_object_items(self, named: list[tuple[int, str]]) -> None:
        """Add many objects to the list, then select the last one.

        Selecting redoes the prompt layers' defaults and the quality strip: hundreds of seeded
        objects are selected once, not one after the other.
        """
        for obj_id, name in named:
            self._add_object_item(obj_id, name, select=False)
        if named:
            self._select_object(named[-1][0])

    def _add_object_item(self, obj_id, name, select: bool = True):
        from qtpy.QtGui import QColor, QIcon, QPixmap

        self.core.objects[obj_id] = name
        item = QListWidgetItem(shown_name(obj_id, name))
        item.setData(ID_ROLE, obj_id)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        if self.labels_layer is not None:
            rgba = np.asarray(self.labels_layer.get_color(obj_id), dtype=float)
            pix = QPixmap(12, 12)
            pix.fill(QColor(*(int(255 * c) for c in rgba[:3])))
            item.setIcon(QIcon(pix))
        self.object_list.addItem(item)
        if select:
            self.object_list.setCurrentItem(item, ONLY)

    def _object_selected(self, item, *_):
        self.core.active_id = None if item is None else int(item.data(ID_ROLE))
        self.prompts.set_active(self.active_id)
        self._update_quality()

    def _object_renamed(self, item):
        """A name typed in the list; the "id: " the line shows is not part of it."""
        obj_id = item.data(ID_ROLE)
        if obj_id is None:
            return
        obj_id = int(obj_id)
        name = item.text().strip()
        prefix = f"{obj_id}:"
        name = name[len(prefix):].strip() if name.startswith(prefix) else name
        self.core.objects[obj_id] = name or f"object {obj_id}"
        if item.text() != shown_name(obj_id, self.core.objects[obj_id]):
            self.object_list.blockSignals(True)  # (this handler answers the list's itemChanged)
            item.setText(shown_name(obj_id, self.core.objects[obj_id]))
            self.object_list.blockSignals(False)

    def _select_object(self, obj_id: int) -> bool:
        for row in range(self.object_list.count()):
            item = self.object_list.item(row)
            if item is not None and int(item.data(ID_ROLE)) == obj_id:
                self.object_list.setCurrentItem(item, ONLY)
                return True
        return False

    def _pick_object(self, viewer, event):
        """Alt-click on the canvas: select the object under the cursor (whatever layer is active).

        napari hands the click to the active layer as well: that layer is in pan/zoom mode
        until the button is released, so the click selects and does nothing else (the points
        layer in add mode would add a click for the object just selected).
        """
        if "Alt" not in [str(getattr(m, "name", m)) for m in event.modifiers] or self.labels_layer is None:
            return
        value = self.labels_layer.get_value(event.position, world=True)
        obj_id = int(value) if value is not None and not isinstance(value, tuple) else 0
        if obj_id in self.objects and self._select_object(obj_id):
            self.say(f"selected {self.objects[obj_id]}")
        else:
            self.say("Alt-click on an object's mask selects it; there is none here")
        event.handled = True
        active = viewer.layers.selection.active
        mode = getattr(active, "mode", None)
        paused = mode is not None and str(mode) != "pan_zoom"
        if paused:
            active.mode = "pan_zoom"
        yield
        while event.type == "mouse_move":
            yield
        if paused:
            active.mode = mode

    def selected_ids(self) -> list[int]:
        """The objects selected in the list, else the active one (none: an empty list)."""
        ids = [int(i.data(ID_ROLE)) for i in self.object_list.selectedItems()]
        return ids or ([self.active_id] if self.active_id is not None else [])

    def delete_selected(self):
        """Remove every selected object of the list: prompts, pixels (one undoable step), memory."""
        ids = [i for i in self.selected_ids() if i in self.objects]
        if not ids:
            return self.say("no object selected")
        names = ", ".join(self.objects[i] for i in ids)
        self._remove_objects(ids, f"deleted {names}")

    def _undeleted(self, obj_ids, session) -> None:
        """Undo prompt after a Delete: the objects back in the list, their prompts and pixels."""
        obj_ids = [int(i) for i in obj_ids]
        names, edits = self.core.undelete(obj_ids)
        for obj_id, name in zip(obj_ids, names):
            self._add_object_item(obj_id, name)
        self.prompts.show_prompts({i: session.prompts(i) for i in obj_ids})
        self._show_edits(edits)
        self._update_quality()
        their = "its" if len(names) == 1 else "their"
        which = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        self.say(f"undid the deletion of {which}: {their} prompts and pixels are back")

    def _remove_objects(self, ids, message: str | None = None, session=None, layout=None,
                        pixels: bool = True) -> None:
        """Take objects away: list entries and prompts now, engine memory and pixels in a worker.

        The pixels go in one undoable step. ``session`` and ``layout``: those of the moment the
        removal was asked for (default: the current ones); ``message`` for the status line.
        ``pixels=False``: the list entries and prompts only (the engine and the labels are
        already done, as after a seeding's undo).
        """
        gone = {int(i) for i in ids}
        for obj_id in gone:  # the list and the prompt layers change at once...
            self.prompts.remove_object(obj_id)
        for row in reversed(range(self.object_list.count())):
            item = self.object_list.item(row)
            if item is not None and int(item.data(ID_ROLE)) in gone:
                self.object_list.takeItem(row)
        if not pixels:
            return
        core = self.core
        session = session or self.session
        layout = layout or self.stack_layout

        def done(writes):  # ...the pixels once the worker has prepared them
            self._show_edits(core.finish_delete(list(gone), writes).edits)
            self._update_quality()
            if message:
                self.say(message)

        self.tasks.submit(lambda: core.prepare_delete(list(gone), session, layout), done)
