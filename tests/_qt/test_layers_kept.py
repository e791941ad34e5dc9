"""What is in the dock's layers is never lost, whatever the user does with the layers.

The dock's layers hold the session's masks and prompts: one removed from the viewer comes back as
it was when the session needs it. The session's image removed ends the session (and its run)
without an error. A revert goes into the layer the run was written into. A session loaded over
work in progress leaves that work's layers in the viewer.
"""

from __future__ import annotations

import numpy as np
import pytest
from _user_actions import (
    cell_centre,
    click_at,
    load_with_button,
    open_dock,
    press,
    press_key,
    same,
    viewer_with_model,
    wait_idle,
)

from napari_sam2.samples import make_cells_timelapse


@pytest.fixture
def cells():
    return make_cells_timelapse(n_frames=8, shape=(64, 64), n_cells=3, seed=1)


def test_removed_labels_and_points_layers_come_back_with_everything_in_them(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    click_at(qtbot, dock, (1, *cell_centre(cells, 1)))
    labels, points = dock.labels_layer, dock.prompts.points
    first = labels.data[1].copy()
    assert (first == 1).any() and len(points.data) == 1

    from napari.utils.notifications import notification_manager

    shown = []
    notification_manager.notification_ready.connect(lambda n: shown.append(str(n.message)))
    viewer.layers.remove(labels)
    viewer.layers.remove(points)
    press_key(qtbot, viewer, "n")  # a new object: the user wants to click again
    assert labels in viewer.layers and points in viewer.layers
    assert dock.labels_combo.currentText() == "SAM 2 labels"
    assert same(viewer.layers.selection.active, points) and points.mode == "add"
    assert any("'SAM 2 labels' and 'SAM 2 points' were removed" in m and "added back" in m
               for m in shown), shown
    assert dock.active_id == 2
    click_at(qtbot, dock, (2, *cell_centre(cells, 2)))
    assert (labels.data[2] == 2).any()
    np.testing.assert_array_equal(labels.data[1], first)  # the first object's mask is still there
    assert len(points.data) == 2 and dock.session.prompted_frames(1) == [1], "its click still counts"
    no_alerts.check()


def test_removing_the_image_mid_run_ends_the_session_quietly(make_napari_viewer, hub_cache, no_alerts,
                                                             qtbot):
    cells = make_cells_timelapse(n_frames=40, shape=(64, 64), n_cells=3, seed=1)
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    click_at(qtbot, dock, (0, *cell_centre(cells, 0)))
    press(qtbot, dock.propagate_button)
    qtbot.waitUntil(lambda: dock.progress.done >= 2, timeout=60_000)
    viewer.layers.remove("cells")
    wait_idle(qtbot, dock)
    assert dock.session is None
    assert "image was removed" in dock.status.text() or "cancelled" in dock.status.text()
    assert 2 <= dock.progress.done < 40
    assert (dock.labels_layer.data[:2] == 1).any(), "the frames done stay"
    no_alerts.check()


def _beside_my_labels(make_napari_viewer, qtbot, cells):
    """A viewer with the cells, the user's own Labels layer 'mine' (40 in a corner), a model loaded."""
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cells.image, name="cells")
    mine = viewer.add_labels(np.zeros((8, 64, 64), np.uint16), name="mine")
    mine.data[:, :12, :12] = 40  # the user's own labels
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    return viewer, dock, mine


def test_revert_after_choosing_another_target_layer_leaves_that_layer_alone(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    from _user_actions import choose

    viewer, dock, mine = _beside_my_labels(make_napari_viewer, qtbot, cells)
    click_at(qtbot, dock, (2, *cell_centre(cells, 2)))
    sam = dock.labels_layer
    clicked = sam.data.copy()
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)
    assert (sam.data != clicked).any()
    choose(dock.labels_combo, "mine")  # the next masks go into the user's layer
    assert same(dock.labels_layer, mine)
    before = mine.data.copy()
    press(qtbot, dock.revert_button)
    wait_idle(qtbot, dock)
    np.testing.assert_array_equal(mine.data, before)
    np.testing.assert_array_equal(sam.data, clicked)
    assert "in 'SAM 2 labels' back as they were" in dock.status.text(), dock.status.text()
    no_alerts.check()


def test_a_target_layer_holding_ids_of_sam2_objects_is_named_in_the_status(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    from _user_actions import choose

    viewer = make_napari_viewer(show=True)
    viewer.add_image(cells.image, name="cells")
    apart = viewer.add_labels(np.zeros((8, 64, 64), np.uint16), name="apart")
    apart.data[5, :4, :4] = 40  # ids no object has
    cellpose = viewer.add_labels(np.zeros((8, 64, 64), np.uint16), name="cellpose")
    cellpose.data[5, :4, :4] = 2  # the user's label 2, the id of the second SAM 2 object
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    click_at(qtbot, dock, (2, *cell_centre(cells, 2)))
    press_key(qtbot, viewer, "n")
    click_at(qtbot, dock, (3, *cell_centre(cells, 3)))
    assert set(dock.objects) == {1, 2}
    choose(dock.labels_combo, "apart")
    wait_idle(qtbot, dock)
    assert "already holds" not in dock.status.text()
    choose(dock.labels_combo, "cellpose")
    wait_idle(qtbot, dock)
    assert dock.status.text() == ("'cellpose' already holds id 2 of SAM 2 objects: those pixels now count "
                                  "as the objects' (a propagation or Delete changes them); choose "
                                  "'(new layer)' to keep them apart"), dock.status.text()
    no_alerts.check()


def test_a_session_loaded_over_work_leaves_that_work_in_the_viewer(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells, tmp_path, monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    click_at(qtbot, dock, (1, *cell_centre(cells, 1)))
    path = tmp_path / "one.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    press(qtbot, dock.save_button)
    saved = dock.labels_layer.data.copy()

    press_key(qtbot, viewer, "n")  # more work after the save: a second object
    lab = cells.labels[4]
    rows, cols = np.nonzero(lab == np.unique(lab[lab > 0])[1])
    click_at(qtbot, dock, (4, float(np.median(rows)), float(np.median(cols))))
    work = dock.labels_layer
    before = work.data.copy()
    assert (before == 2).any()

    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    press(qtbot, dock.load_session_button)
    wait_idle(qtbot, dock)
    assert work.name == "SAM 2 labels (before one.json)" and work in viewer.layers and not work.visible
    np.testing.assert_array_equal(work.data, before)  # the later work is all there
    assert not same(dock.labels_layer, work)
    np.testing.assert_array_equal(dock.labels_layer.data, saved)
    assert dict(dock.objects) == {1: "object 1"} and dock.session.prompted_frames(1) == [1]
    assert len(dock.prompts.points.data) == 1
    assert "the earlier objects are in 'SAM 2 labels (before one.json)'" in dock.status.text()
    no_alerts.check()


def test_choosing_new_layer_sends_the_next_masks_into_a_new_layer(make_napari_viewer, hub_cache, no_alerts,
                                                                 qtbot, cells):
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    click_at(qtbot, dock, (1, *cell_centre(cells, 1)))
    first = dock.labels_layer
    kept = first.data.copy()
    combo = dock.labels_combo
    index = combo.findText("(new layer)")
    combo.setCurrentIndex(index)
    combo.activated.emit(index)  # as the user picks it from the list
    second = dock.labels_layer
    assert second is not None and not same(second, first) and combo.currentText() == second.name
    assert "masks now go into" in dock.status.text() and not second.data.any()
    press_key(qtbot, viewer, "n")
    click_at(qtbot, dock, (2, *cell_centre(cells, 2)))
    assert (second.data[2] == 2).any() and not second.data[1].any()
    np.testing.assert_array_equal(first.data, kept)  # the first layer keeps what it had
    no_alerts.check()


@pytest.mark.parametrize("opened_by", ["napari", "napari-sam2 view"])
def test_export_and_save_never_replace_the_file_the_image_was_read_from(
        make_napari_viewer, hub_cache, qtbot, cells, tmp_path, monkeypatch, opened_by):
    import tifffile
    from qtpy.QtWidgets import QFileDialog

    source = tmp_path / "cells.tif"
    tifffile.imwrite(source, cells.image)
    original = source.read_bytes()
    viewer = make_napari_viewer(show=True)
    if opened_by == "napari":
        viewer.open(str(source), plugin="napari")  # the layer remembers the file it came from
        dock = open_dock(viewer)
    else:  # as `napari-sam2 view cells.tif` opens it: our reader's layer, the dock docked
        from napari_sam2.cli import open_in_viewer
        from napari_sam2.io.readers import open_stack

        _, dock = open_in_viewer(viewer, open_stack(source))
    load_with_button(qtbot, dock)
    click_at(qtbot, dock, (1, *cell_centre(cells, 1)))

    press(qtbot, dock.export_button)  # the user types the image's own name in the form
    form = dock.export_form.form
    assert form.file.value == tmp_path / "cells_labels.tif"  # offered next to the image
    form.file.value = source
    form.call_button.native.click()
    assert dock.status.is_error and "is the file of the layer 'cells'" in dock.status.text()
    assert source.read_bytes() == original and dock.export_form.dialog.isVisible()

    offered = []

    def save_as(parent, caption, directory, *rest, **kwargs):
        offered.append(directory)
        return str(tmp_path / "cells.json"), ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_as)
    press(qtbot, dock.save_button)  # its labels would go to cells.labels.tif: fine, another name
    assert offered == [str(tmp_path / "cells_session.json")], "offered next to the image, named after it"
    assert (tmp_path / "cells.labels.tif").exists() and source.read_bytes() == original
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(source), ""))
    press(qtbot, dock.save_button)  # a session file named like the image
    assert dock.status.is_error and "is the file of the layer 'cells'" in dock.status.text()
    assert source.read_bytes() == original


def test_delete_after_the_image_was_removed(make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    """The session ended with the image; the user's Delete still takes the object out."""
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    click_at(qtbot, dock, (1, *cell_centre(cells, 1)))
    labels, points = dock.labels_layer, dock.prompts.points
    assert (labels.data[1] == 1).any() and len(points.data) == 1
    viewer.layers.remove("cells")
    assert dock.session is None
    dock.object_list.setCurrentRow(0)
    press(qtbot, dock.delete_button)
    wait_idle(qtbot, dock)
    assert "deleted object 1" in dock.status.text()
    assert not (labels.data == 1).any() and len(points.data) == 0
    no_alerts.check()


def test_a_replay_that_outlives_its_session_changes_nothing(make_napari_viewer, hub_cache, no_alerts,
                                                            qtbot, cells, monkeypatch):
    """Re-read (prompts replayed in a worker) while the image is removed: no error, nothing drawn."""
    import threading

    from napari_sam2.io import session_file

    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    click_at(qtbot, dock, (1, *cell_centre(cells, 1)))
    go_on, real = threading.Event(), session_file.replay
    monkeypatch.setattr(session_file, "replay", lambda *a, **k: (go_on.wait(30), real(*a, **k))[1])
    dock.reread_button.click()  # the Image section is folded after loading: the button's own signal
    viewer.layers.remove("cells")  # while the replay waits in its worker
    go_on.set()
    wait_idle(qtbot, dock)
    assert dock.session is None
    assert "Re-reading contrast stopped: SAM 2's session ended meanwhile" in dock.status.text()
    no_alerts.check()


def test_undoing_a_seeding_into_the_seed_layer_leaves_that_layer_as_it_was(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    """Seed from a Cellpose layer that is also the target, then Undo: not one of its labels is lost."""
    from _user_actions import choose

    seeds = np.zeros_like(cells.labels)
    a, b = [i for i in np.unique(cells.labels[0]) if i][:2]
    seeds[0][cells.labels[0] == a], seeds[0][cells.labels[0] == b] = 7, 42
    seeds[3][cells.labels[3] == a] = 7  # the same cell labelled on another frame, never seeded
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cells.image, name="cells")
    cellpose = viewer.add_labels(seeds.copy(), name="cellpose")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    choose(dock.labels_combo, "cellpose")  # the masks go into the same layer
    dock.mask_source.setCurrentText("cellpose")
    dock.go_to_frame(0)
    press(qtbot, dock.seed_button)
    wait_idle(qtbot, dock)
    assert set(dock.objects) == {7, 42}
    press(qtbot, dock.undo_button)
    wait_idle(qtbot, dock)
    assert dock.objects == {} and dock.session.objects == []
    np.testing.assert_array_equal(cellpose.data, seeds)
    no_alerts.check()


def test_undo_after_load_session_shows_what_the_session_holds(make_napari_viewer, hub_cache, no_alerts,
                                                               qtbot, cells, tmp_path):
    """Undo reaching into a loaded session's prompts: the layers show the engine's prompts."""
    from _user_actions import drag_on_canvas, world

    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    click_at(qtbot, dock, (0, *cell_centre(cells, 0)))
    press_key(qtbot, viewer, "n")
    dock.go_to_frame(3)
    viewer.layers.selection.active = dock.prompts.shapes
    dock.prompts.shapes.mode = "add_rectangle"
    drag_on_canvas(viewer, world(dock.image_layer, (3, 10, 10)), world(dock.image_layer, (3, 30, 30)))
    wait_idle(qtbot, dock)
    dock.save_session(tmp_path / "two.json")

    other, loaded = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    loaded.load_session(tmp_path / "two.json")
    wait_idle(qtbot, loaded)
    assert loaded.prompts.shapes.nshapes == 1 and len(loaded.prompts.points.data) == 1
    press(qtbot, loaded.undo_button)  # the box, replayed last
    wait_idle(qtbot, loaded)
    assert loaded.session.objects == [1]
    assert loaded.prompts.shapes.nshapes == 0 and len(loaded.prompts.points.data) == 1
    press(qtbot, loaded.undo_button)  # the click
    wait_idle(qtbot, loaded)
    assert loaded.session.objects == [] and len(loaded.prompts.points.data) == 0
    no_alerts.check()


def test_removing_the_green_layer_stops_sam2_reading_it(make_napari_viewer, hub_cache, no_alerts, qtbot,
                                                        cells):
    from _user_actions import choose

    viewer = make_napari_viewer(show=True)
    viewer.add_image(cells.image, name="ch0")
    viewer.add_image(cells.image[:, ::-1].copy(), name="ch1")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    choose(dock.image_combo, "ch0")
    choose(dock.green_combo, "ch1")
    wait_idle(qtbot, dock)
    click_at(qtbot, dock, (0, *cell_centre(cells, 0)))
    assert dock.session_channels == [0, 1] and dock.contrast_label.text().count("–") == 2
    viewer.layers.remove("ch1")
    wait_idle(qtbot, dock)
    assert dock.green_combo.currentText() == "(none)"
    assert dock.session_channels is None and dock.contrast_label.text().count("–") == 1
    assert dock.session.prompted_frames(1) == [0], "the prompts were replayed on the gray image"
    assert "channels changed" in dock.status.text(), dock.status.text()
    no_alerts.check()


def test_choosing_another_image_says_the_session_starts_again(make_napari_viewer, hub_cache, no_alerts,
                                                               qtbot, cells):
    from _user_actions import choose

    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    viewer.add_image(cells.image[:, ::-1].copy(), name="flipped")
    choose(dock.image_combo, "cells")
    click_at(qtbot, dock, (0, *cell_centre(cells, 0)))
    labels = dock.labels_layer.data.copy()
    choose(dock.image_combo, "flipped")
    assert dock.session is None
    assert dock.status.text() == ("SAM 2 now reads 'flipped': a new session starts with the next click or "
                                  "Propagate; labels and prompts stay")
    np.testing.assert_array_equal(dock.labels_layer.data, labels)
    no_alerts.check()


def _clicked_then_target_changed(make_napari_viewer, qtbot, cells):
    """Object 1 clicked twice on frame 2 into 'SAM 2 labels', then the user's 'mine' chosen."""
    from _user_actions import choose

    viewer, dock, mine = _beside_my_labels(make_napari_viewer, qtbot, cells)
    r, c = cell_centre(cells, 2)
    click_at(qtbot, dock, (2, r, c))
    sam = dock.labels_layer
    first = sam.data.copy()
    click_at(qtbot, dock, (2, r + 1, c + 1))  # a second click on the same cell
    choose(dock.labels_combo, "mine")
    assert same(dock.labels_layer, mine)
    return viewer, dock, sam, mine, first


def test_undo_prompt_after_choosing_another_target_goes_where_the_prompt_was_painted(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer, dock, sam, mine, first = _clicked_then_target_changed(make_napari_viewer, qtbot, cells)
    before = mine.data.copy()
    press(qtbot, dock.undo_button)
    wait_idle(qtbot, dock)
    np.testing.assert_array_equal(mine.data, before)  # nothing of object 1 lands in 'mine'
    np.testing.assert_array_equal(sam.data[2] == 1, dock.session.mask(2, 1))  # the first click's mask
    assert "in 'SAM 2 labels'" in dock.status.text(), dock.status.text()
    press(qtbot, dock.undo_button)  # the first click too: its pixels leave 'SAM 2 labels'
    wait_idle(qtbot, dock)
    np.testing.assert_array_equal(mine.data, before)
    assert not (sam.data == 1).any() and (first == 1).any()
    no_alerts.check()


def test_delete_after_choosing_another_target_clears_the_layer_that_holds_the_object(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer, dock, sam, mine, _ = _clicked_then_target_changed(make_napari_viewer, qtbot, cells)
    before = mine.data.copy()
    assert (sam.data[2] == 1).any()
    press(qtbot, dock.delete_button)
    wait_idle(qtbot, dock)
    assert not (sam.data == 1).any(), "the object's pixels leave the layer they are in"
    np.testing.assert_array_equal(mine.data, before)
    press(qtbot, dock.undo_button)  # and come back there
    wait_idle(qtbot, dock)
    assert (sam.data[2] == 1).any()
    np.testing.assert_array_equal(mine.data, before)
    no_alerts.check()
