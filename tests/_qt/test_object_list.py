"""The object list as a user works it: new objects, Delete, Alt-click, renames kept as typed."""

from __future__ import annotations

import numpy as np
import pytest
from _user_actions import (
    cell_centre,
    click_at,
    click_through_canvas,
    press,
    press_key,
    viewer_with_model,
    wait_idle,
    world,
)

from napari_sam2.samples import make_cells_timelapse


@pytest.fixture
def cells():
    return make_cells_timelapse(n_frames=6, shape=(64, 64), n_cells=3, seed=1)


def _two_objects(make_napari_viewer, qtbot, cells):
    """Objects 1 and 2 made one after the other (New, Use as mask), with exact masks on frame 0."""
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    lab = cells.labels[0]
    a, b = [i for i in np.unique(lab) if i][:2]
    seeds = np.zeros_like(cells.labels)
    seeds[0][lab == a], seeds[0][lab == b] = 1, 5
    viewer.add_labels(seeds, name="seeds")
    dock.mask_source.setCurrentText("seeds")
    dock.go_to_frame(0)
    for n, source_id in enumerate((1, 5)):
        if n:
            press_key(qtbot, viewer, "n")
        dock.mask_id.setValue(source_id)
        press(qtbot, dock.mask_button)
        wait_idle(qtbot, dock)
    assert set(dock.objects) == {1, 2}
    np.testing.assert_array_equal(dock.labels_layer.data[0] == 2, lab == b)
    return viewer, dock


def test_delete_takes_only_the_active_object(make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    """N selects the new object alone: Delete then takes that one, not every object made so far."""
    viewer, dock = _two_objects(make_napari_viewer, qtbot, cells)
    assert dock.active_id == 2
    assert [int(i.data(256)) for i in dock.object_list.selectedItems()] == [2]
    press(qtbot, dock.delete_button)
    wait_idle(qtbot, dock)
    assert set(dock.objects) == {1} and dock.status.text() == "deleted object 2"
    assert (dock.labels_layer.data[0] == 1).any() and not (dock.labels_layer.data == 2).any()
    no_alerts.check()


def test_alt_click_selects_an_object_and_adds_no_click(make_napari_viewer, hub_cache, no_alerts, qtbot,
                                                       cells):
    viewer, dock = _two_objects(make_napari_viewer, qtbot, cells)
    points = dock.prompts.points
    assert viewer.layers.selection.active is points or points.mode == "add"
    n_clicks = len(points.data)
    rows, cols = np.nonzero(dock.labels_layer.data[0] == 1)
    click_through_canvas(viewer, world(dock.image_layer, (0, rows[len(rows) // 2], cols[len(cols) // 2])),
                         modifiers=("Alt",))
    wait_idle(qtbot, dock)
    assert dock.active_id == 1 and dock.status.text() == "selected object 1"
    assert len(points.data) == n_clicks, "the Alt-click only selects"
    assert points.mode == "add", "the next plain click is a prompt again"
    click_at(qtbot, dock, (0, *cell_centre(cells, 0)))
    assert len(points.data) == n_clicks + 1
    no_alerts.check()


def test_a_renamed_object_keeps_the_name_typed(make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    """The list shows "1: nucleus A"; editing that line keeps the name, not the id before it."""
    from napari_sam2._qt.object_list import shown_name

    viewer, dock = _two_objects(make_napari_viewer, qtbot, cells)
    item = dock.object_list.item(0)
    item.setText("nucleus A")  # what the list's editor does when the user types a name
    assert dock.objects[1] == "nucleus A" and item.text() == "1: nucleus A"
    item.setText("1: nucleus A (checked)")  # the next edit starts from the line shown
    assert dock.objects[1] == "nucleus A (checked)" and item.text() == "1: nucleus A (checked)"
    item.setText("")  # an empty name: the default one
    assert dock.objects[1] == "object 1" and item.text() == shown_name(1, "object 1") == "object 1"
    no_alerts.check()


def test_undo_after_delete_brings_the_object_back_whole(make_napari_viewer, hub_cache, no_alerts, qtbot,
                                                         cells):
    viewer, dock = _two_objects(make_napari_viewer, qtbot, cells)
    rows, cols = np.nonzero(dock.labels_layer.data[0] == 2)
    click_at(qtbot, dock, (0, float(rows.mean()), float(cols.mean())))  # a click refines object 2
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)
    before = dock.labels_layer.data.copy()
    assert (before[1:] == 2).any(), "tracked on other frames too"
    n_clicks = len(dock.prompts.points.data)
    press(qtbot, dock.delete_button)
    wait_idle(qtbot, dock)
    assert set(dock.objects) == {1} and not (dock.labels_layer.data == 2).any()
    assert len(dock.prompts.points.data) == n_clicks - 1

    press(qtbot, dock.undo_button)
    wait_idle(qtbot, dock)
    assert dock.status.text() == "undid the deletion of object 2: its prompts and pixels are back"
    assert set(dock.objects) == {1, 2} and dock.active_id == 2 and set(dock.session.objects) == {1, 2}
    np.testing.assert_array_equal(dock.labels_layer.data, before)
    assert len(dock.prompts.points.data) == n_clicks
    press(qtbot, dock.undo_button)  # and the undo history goes on: object 2's click
    wait_idle(qtbot, dock)
    assert dock.status.text() == "undid the last prompt of object 2 on frame 0"
    assert len(dock.prompts.points.data) == n_clicks - 1
    no_alerts.check()


def test_one_undo_brings_back_every_object_one_delete_took(make_napari_viewer, hub_cache, no_alerts,
                                                           qtbot, cells):
    from qtpy.QtCore import Qt

    viewer, dock = _two_objects(make_napari_viewer, qtbot, cells)
    before = dock.labels_layer.data.copy()
    n_prompts = len(dock.prompts.shapes.data) + len(dock.prompts.points.data)
    first = dock.object_list.item(0)  # Ctrl-click on object 1: both selected
    qtbot.mouseClick(dock.object_list.viewport(), Qt.MouseButton.LeftButton,
                     Qt.KeyboardModifier.ControlModifier, dock.object_list.visualItemRect(first).center())
    assert sorted(dock.selected_ids()) == [1, 2]
    press(qtbot, dock.delete_button)
    wait_idle(qtbot, dock)
    assert not dock.objects and not dock.labels_layer.data.any()
    press(qtbot, dock.undo_button)
    wait_idle(qtbot, dock)
    assert dock.status.text() == ("undid the deletion of object 1 and object 2: their prompts and "
                                  "pixels are back")
    assert set(dock.objects) == {1, 2} == set(dock.session.objects)
    np.testing.assert_array_equal(dock.labels_layer.data, before)
    assert len(dock.prompts.shapes.data) + len(dock.prompts.points.data) == n_prompts
    no_alerts.check()


def test_selected_only_propagates_every_selected_object_and_names_one_without_prompts(
        make_napari_viewer, hub_cache, qtbot, cells):
    viewer, dock = _two_objects(make_napari_viewer, qtbot, cells)
    press_key(qtbot, viewer, "n")  # object 3, no prompt yet
    dock.selected_only.setChecked(True)
    press(qtbot, dock.propagate_button)
    assert dock.status.is_error
    assert dock.status.text() == ("'object 3' has no prompt yet: click on it first (or untick "
                                  "'selected only')"), dock.status.text()
    for row in range(dock.object_list.count()):  # Ctrl-click: objects 1 and 2
        item = dock.object_list.item(row)
        item.setSelected(item.text() in ("object 1", "object 2"))
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)
    assert dock.status.text().startswith("propagated 6 frames"), dock.status.text()
    for obj_id in (1, 2):  # both selected objects were tracked through every frame
        assert np.isfinite(dock.session.quality(obj_id)[:, 0]).all(), obj_id


def test_a_frame_range_includes_its_last_frame(make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    """"from 1 to 3" propagates through frames 1, 2 and 3 ("last": to the end of the stack)."""
    viewer, dock = _two_objects(make_napari_viewer, qtbot, cells)
    assert dock.stop_spin.text() == "last" and dock.stop_spin.maximum() == 5
    dock.direction_combo.setCurrentText("forward")
    dock.start_spin.setValue(1)
    dock.stop_spin.setValue(3)
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)
    tracked = np.isfinite(dock.session.quality(1)[:, 0])
    assert tracked.tolist() == [True, True, True, True, False, False], tracked
    assert dock.status.text().startswith("propagated 3 frames"), dock.status.text()
    no_alerts.check()


def test_frames_are_counted_once_when_objects_start_on_different_frames(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    """Objects prompted on frames 0 and 3 go forward and backward in turn: 6 frames, not 9 steps."""
    viewer, dock = _two_objects(make_napari_viewer, qtbot, cells)
    press_key(qtbot, viewer, "n")
    click_at(qtbot, dock, (3, *cell_centre(cells, 3)))
    plan = dock.session.plan_propagation("both")
    assert len(plan) > len(set(plan)) == 6, plan
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)
    assert dock.status.text().startswith("propagated 6 frames"), dock.status.text()
    assert dock.progress.done == 6 and dock.progress.text().startswith("6 / 6 frames")
    no_alerts.check()


def test_a_range_the_direction_never_reaches_says_so(make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer, dock = _two_objects(make_napari_viewer, qtbot, cells)  # prompted on frame 0
    dock.direction_combo.setCurrentText("backward")
    dock.start_spin.setValue(2)
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)
    assert dock.status.text() == ("no frames to propagate: 'backward' from the prompts leaves the range "
                                  "2–last; change the direction or the range"), dock.status.text()
    assert dock.propagate_button.isEnabled()
    no_alerts.check()
