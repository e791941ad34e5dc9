"""A user's actions for GUI tests.

A click in add mode, a key on the canvas, a button press, typing into a field, choosing in a
combo box.
"""

from __future__ import annotations

import warnings

import numpy as np


class _MouseEvent:
    """What napari's mouse callbacks read of a vispy mouse event on the canvas."""

    def __init__(self, viewer, type_, position, dragging=False, modifiers=()):
        self.type = type_
        self.is_dragging = dragging
        self.modifiers = list(modifiers)
        self.position = tuple(float(c) for c in position)
        self.pos = np.zeros(2)
        self.view_direction = None
        self.up_direction = None
        self.dims_displayed = list(viewer.dims.displayed)
        self.dims_point = list(viewer.dims.point)
        self.button = 1
        self.handled = False


def _mouse(viewer, callbacks, type_, position, dragging=False, modifiers=()):
    """Send one mouse event to the active layer's callbacks (as napari's own layer tests do)."""
    from napari.utils._proxies import ReadOnlyWrapper

    layer = viewer.layers.selection.active
    assert layer is not None, "no layer is selected: the mouse would act on nothing"
    event = _MouseEvent(viewer, type_, position, dragging, modifiers)
    callbacks(layer, ReadOnlyWrapper(event, exceptions=("handled",)))
    return layer


def click_canvas(viewer, world_pos, modifiers=()):
    """A left click on the canvas at ``world_pos``, seen by the active layer (as in napari's tests)."""
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    _mouse(viewer, mouse_press_callbacks, "mouse_press", world_pos, modifiers=modifiers)
    return _mouse(viewer, mouse_release_callbacks, "mouse_release", world_pos, modifiers=modifiers)


def click_through_canvas(viewer, world_pos, modifiers=()):
    """A click as napari's canvas delivers it: the viewer's callbacks, then the active layer's."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    for callbacks, type_ in ((mouse_press_callbacks, "mouse_press"),
                             (mouse_release_callbacks, "mouse_release")):
        event = ReadOnlyWrapper(_MouseEvent(viewer, type_, world_pos, modifiers=modifiers),
                                exceptions=("handled",))
        callbacks(viewer, event)
        layer = viewer.layers.selection.active
        if layer is not None:
            callbacks(layer, event)


def drag_on_canvas(viewer, start, end, steps=5):
    """A left-button drag on the canvas from ``start`` to ``end`` (world coordinates).

    As the active layer sees it: e.g. a rectangle drawn in a Shapes layer's add_rectangle mode.
    """
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    start, end = np.asarray(start, float), np.asarray(end, float)
    _mouse(viewer, mouse_press_callbacks, "mouse_press", start)
    for t in np.linspace(0, 1, steps):
        _mouse(viewer, mouse_move_callbacks, "mouse_move", start + t * (end - start), dragging=True)
    return _mouse(viewer, mouse_release_callbacks, "mouse_release", end, dragging=True)


def press_key(qtbot, viewer, key):
    """Press a key with the canvas focused, as a user does ("n", "Shift-P")."""
    from qtpy.QtCore import Qt

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    modifier = Qt.KeyboardModifier.NoModifier
    if key.startswith("Shift-"):
        modifier, key = Qt.KeyboardModifier.ShiftModifier, key[len("Shift-"):]
    qtbot.keyClick(canvas, getattr(Qt.Key, f"Key_{key.upper()}") if len(key) == 1 else key, modifier)


def press(qtbot, button):
    """Click a button of the dock with the mouse (it must be visible and enabled)."""
    from qtpy.QtCore import Qt

    assert button.isEnabled(), f"{button.text()!r} is disabled"
    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def type_into(qtbot, line_edit, text, enter=False):
    """Select all of a text field and type ``text`` over it (then Enter, if asked)."""
    from qtpy.QtCore import Qt

    line_edit.setFocus()
    line_edit.selectAll()
    qtbot.keyClicks(line_edit, text)
    if enter:
        qtbot.keyClick(line_edit, Qt.Key.Key_Return)


def choose(combo, text):
    """Pick an entry of a combo box by its text, as a user does from its list."""
    index = combo.findText(text)
    assert index >= 0, f"{text!r} is not among {[combo.itemText(i) for i in range(combo.count())]}"
    combo.setCurrentIndex(index)
    combo.activated.emit(index)


def world(layer, data_coords):
    """A layer's data coordinates in world coordinates (where a user clicks)."""
    return np.asarray(layer.data_to_world(np.asarray(data_coords, float)))


def same(a, b) -> bool:
    """Whether two layers are one (napari hands plugins proxies of its objects)."""
    return getattr(a, "__wrapped__", a) is getattr(b, "__wrapped__", b)


def turn_wheel(widget, notches=-1):
    """Turn the mouse wheel over ``widget`` (negative: towards the user, i.e. scroll down)."""
    from qtpy.QtCore import QPoint, QPointF, Qt
    from qtpy.QtGui import QWheelEvent
    from qtpy.QtWidgets import QApplication

    centre = QPointF(widget.width() / 2, widget.height() / 2)
    event = QWheelEvent(centre, QPointF(widget.mapToGlobal(centre.toPoint())), QPoint(0, 0),
                        QPoint(0, 120 * notches), Qt.MouseButton.NoButton,
                        Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


# ---------------------------------------------------------------------------- the dock

#: milliseconds a test waits for the dock's work (a model load, a propagation)
TIMEOUT = 120_000


def open_dock(viewer):
    """Open the SAM 2 dock from napari's plugin menu entry."""
    _, dock = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 segmentation")
    return dock


def wait_idle(qtbot, dock):
    """Wait until the dock's queued work is done."""
    qtbot.waitUntil(lambda: not dock.tasks.busy and not len(dock.tasks), timeout=TIMEOUT)


def load_with_button(qtbot, dock):
    """Press "Load model" and wait for the model."""
    assert dock.load_button.text() == "Load model"
    press(qtbot, dock.load_button)
    wait_idle(qtbot, dock)
    assert dock.model is not None, dock.status.text()


def click_at(qtbot, dock, frame_coords):
    """Click where the image layer's data coordinates ``frame_coords`` are, on that frame."""
    viewer = dock.viewer
    coords = np.asarray(frame_coords, float)
    dock.go_to_frame(int(coords[dock._current_layout().video_axis]))
    click_canvas(viewer, world(dock.image_layer, coords))
    wait_idle(qtbot, dock)


def viewer_with_model(make_napari_viewer, qtbot, image, name="cells", **image_kwargs):
    """A shown viewer holding ``image``, its SAM 2 dock opened and a model loaded by the button."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(image, name=name, **image_kwargs)
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    return viewer, dock


def cell_centre(cells, frame):
    """(row, col) at the middle of the first cell of ``cells.labels[frame]`` (a sample's labels)."""
    lab = cells.labels[frame]
    rows, cols = np.nonzero(lab == lab[lab > 0][0])
    return float(np.median(rows)), float(np.median(cols))
