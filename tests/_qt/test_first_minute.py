"""Whole workflows as a user makes them: the dock's buttons, keys on the canvas, clicks in add mode.

The model is found offline in a Hugging Face cache folder built by the test (``hub_cache``), the
work runs in napari's real thread workers, and every test fails if napari shows a warning or an
error on the way (``no_alerts``).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from _user_actions import (
    choose,
    click_at,
    click_canvas,
    drag_on_canvas,
    load_with_button,
    open_dock,
    press,
    press_key,
    same,
    turn_wheel,
    type_into,
    wait_idle,
    world,
)

from napari_sam2.samples import make_cells_timelapse, make_organ_volume


@pytest.fixture
def cells():
    return make_cells_timelapse(n_frames=8, shape=(64, 64), n_cells=3, seed=1)


def _cell_centre(cells, frame, cell_id=None):
    lab = cells.labels[frame]
    cell_id = cell_id or int(lab[lab > 0][0])
    rows, cols = np.nonzero(lab == cell_id)
    return float(np.median(rows)), float(np.median(cols))


def test_the_first_minute_through_the_dock(make_napari_viewer, hub_cache, no_alerts, qtbot, cells, tmp_path,
                                           monkeypatch):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cells.image, name="cells", axis_labels=("t", "y", "x"))
    dock = open_dock(viewer)
    assert dock.model_combo.currentText() == "sam2.1-tiny"
    load_with_button(qtbot, dock)  # from the hub cache, offline, in the worker

    # the prompt layers are there and the next click segments
    points = dock.prompts.points
    assert points is not None, dock.status.text()
    assert same(viewer.layers.selection.active, points)
    assert points.mode == "add"
    assert "SAM 2 labels" in viewer.layers
    assert not dock.image_section.expanded and not dock.model_section.expanded
    assert dock.objects_section.isVisible() and dock.propagate_button.isVisible()

    r, c = _cell_centre(cells, 0)
    click_at(qtbot, dock, (0, r, c))
    labels = dock.labels_layer.data
    assert dock.objects == {1: "object 1"} and dock.active_id == 1
    mask = dock.session.mask(0, 1)
    assert mask.any(), "the test model must see something"
    np.testing.assert_array_equal(labels[0] == 1, mask)
    assert not labels[1:].any(), "only the clicked frame changes"

    # T: negative clicks; a negative click refines the same object
    press_key(qtbot, viewer, "t")
    assert not dock.positive_check.isChecked()
    click_at(qtbot, dock, (0, 3, 3))
    assert dock.session.prompts(1)[-1].labels.tolist() == [0, ] or dock.session.prompts(1)[-1].labels[-1] == 0
    np.testing.assert_array_equal(labels[0] == 1, dock.session.mask(0, 1))
    press_key(qtbot, viewer, "t")

    # Propagate: every frame gets a mask, progress says frames, rate and time left
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)
    assert all((labels[f] == 1).any() for f in range(8))
    assert dock.progress.text().startswith("8 / 8 frames")
    assert "propagated 8 frames" in dock.status.text()
    assert "8 frames tracked" in dock.quality_label.text()
    after_first_run = labels.copy()

    # correct frame 5 with a second positive click, propagate again, revert that run exactly
    click_at(qtbot, dock, (5, r, c))
    corrected = labels.copy()
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)
    press(qtbot, dock.revert_button)
    wait_idle(qtbot, dock)  # the pixels go back in the worker
    np.testing.assert_array_equal(labels, corrected)
    assert re.match(r"reverted the last propagation: \d+ frames back", dock.status.text())
    press(qtbot, dock.undo_button)  # the correction click goes, frame 5 as after the first run
    wait_idle(qtbot, dock)
    np.testing.assert_array_equal(labels[5], after_first_run[5])

    # N: a new object, and the points layer is ready for its first click
    viewer.layers.selection.active = dock.image_layer
    press_key(qtbot, viewer, "n")
    assert dock.active_id == 2 and same(viewer.layers.selection.active, points) and points.mode == "add"

    # save the session through the dock's button (the file dialog answers with a path)
    from qtpy.QtWidgets import QFileDialog

    path = tmp_path / "cells.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    press(qtbot, dock.save_button)
    assert path.is_file() and (tmp_path / "cells.labels.tif").is_file()
    assert "session saved" in dock.status.text()
    assert json.loads(path.read_text())["settings"]["precision"] == "float32"  # auto, on a CPU

    # a new viewer: Load session… loads the model, the prompts and the labels as they were
    other_viewer = make_napari_viewer()
    other_viewer.add_image(cells.image, name="cells", axis_labels=("t", "y", "x"))
    other = open_dock(other_viewer)
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    press(qtbot, other.load_session_button)
    wait_idle(qtbot, other)
    np.testing.assert_array_equal(other.labels_layer.data, labels)
    assert "labels from cells.labels.tif" in other.status.text()
    assert len(other.prompts.points.data) == len(points.data)


def test_load_model_without_an_image_then_click_and_n(make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer = make_napari_viewer()
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    assert "open an image" in dock.status.text()
    viewer.add_image(cells.image, name="cells")
    press_key(qtbot, viewer, "n")  # N with an image: layers appear, ready for the click
    assert same(viewer.layers.selection.active, dock.prompts.points) and dock.prompts.points.mode == "add"
    r, c = _cell_centre(cells, 2)
    click_at(qtbot, dock, (2, r, c))
    assert (dock.labels_layer.data[2] == dock.active_id).any()


def test_a_box_drawn_on_a_scaled_image_prompts_its_pixels_and_undo_takes_it_away(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cells.image, name="cells", scale=(1, 0.5, 0.5), translate=(0, 10, -4))
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    dock.go_to_frame(2)
    lab = cells.labels[2]
    rows, cols = np.nonzero(lab == lab[lab > 0][0])
    top, left, bottom, right = rows.min() - 2, cols.min() - 2, rows.max() + 2, cols.max() + 2
    viewer.layers.selection.active = dock.prompts.shapes  # the user picks the boxes layer
    dock.prompts.shapes.mode = "add_rectangle"
    image = dock.image_layer
    drag_on_canvas(viewer, world(image, (2, top, left)), world(image, (2, bottom, right)))
    wait_idle(qtbot, dock)
    assert dock.status.text() == "object 1: box on frame 2"
    (prompt,) = dock.session.prompts(1)
    np.testing.assert_allclose(prompt.box, [[top, left], [bottom, right]])  # image pixels
    assert (dock.labels_layer.data[2] == 1).any() and not dock.labels_layer.data[[0, 1, 3]].any()
    press(qtbot, dock.undo_button)
    wait_idle(qtbot, dock)
    assert dock.prompts.shapes.nshapes == 0 and not dock.labels_layer.data.any()
    no_alerts.check()


def test_a_single_image_is_segmented_without_frame_words_or_propagation(make_napari_viewer, hub_cache, qtbot,
                                                                          cells, no_alerts, tmp_path):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cells.image[2], name="one image")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    assert dock.status.text() == "model loaded: click on an object to segment it; N for a new object"
    assert not dock.propagate_button.isEnabled() and not dock.quality_section.isEnabled()
    assert dock.propagate_section.toggle.text() == "Propagate (single image)"
    click_canvas(viewer, world(dock.image_layer, _cell_centre(cells, 2)))
    wait_idle(qtbot, dock)
    assert dock.status.text() == "object 1: click"
    assert (dock.labels_layer.data == 1).any()
    press_key(qtbot, viewer, "Shift-P")
    wait_idle(qtbot, dock)
    assert "nothing to propagate" in dock.status.text() and not dock.status.is_error  # said, no alert
    out = dock.export_labels(tmp_path / "one.tif")
    assert dock.status.text() == f"labels exported to {out} (ImageJ TIFF, pixel 1 px)"  # no axis words
    no_alerts.check()
    press(qtbot, dock.undo_button)  # undo still works on a single image
    wait_idle(qtbot, dock)
    assert not dock.labels_layer.data.any() and not len(dock.prompts.points.data)
    viewer.add_image(cells.image, name="stack")  # a stack chosen next: the sections are back
    choose(dock.image_combo, "stack")
    assert dock.propagate_button.isEnabled() and dock.quality_section.isEnabled()
    assert dock.propagate_section.toggle.text() == "Propagate through time"


def test_a_label_painted_by_hand_is_never_reused_for_a_new_object(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cells.image, name="cells")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    labels = dock.labels_layer
    viewer.layers.selection.active = labels
    labels.mode = "paint"
    labels.brush_size = 3
    labels.selected_label = 50
    viewer.dims.set_current_step(0, 1)
    click_canvas(viewer, world(labels, (1, 10, 10)))  # a brush dab of label 50
    assert (labels.data[1] == 50).any(), "the brush must have painted"
    assert dock.core._max_label == 50, "the stroke is noted, the labels are not scanned"
    press(qtbot, dock.new_button)
    assert dock.active_id == 51
    r, c = _cell_centre(cells, 1)
    click_at(qtbot, dock, (1, r, c))
    assert (labels.data[1] == 51).any() and (labels.data[1] == 50).any(), "the painted label stays"


def test_a_failed_load_shows_the_whole_message_in_the_dock(make_napari_viewer, qtbot, tmp_path, cells):
    viewer = make_napari_viewer()
    viewer.add_image(cells.image)
    dock = open_dock(viewer)
    dock.model_combo.setCurrentText("sam2.1-large")  # not in any cache here, and offline
    press(qtbot, dock.load_button)
    wait_idle(qtbot, dock)
    assert dock.model is None and dock.load_button.isEnabled()
    text = dock.status.text()
    assert dock.status.is_error and "HF_HOME" in text and "hf download" in text, text


def test_a_ct_volume_is_tracked_through_z_and_exported_with_its_voxel_size(
    make_napari_viewer, hub_cache, no_alerts, qtbot, tmp_path
):
    import tifffile

    from napari_sam2.samples import organ_volume_sample

    vol = make_organ_volume(shape=(10, 64, 64), seed=0)
    viewer = make_napari_viewer()
    data, meta, _ = organ_volume_sample()[0]
    meta = dict(meta)
    viewer.add_image(vol.image, **meta)
    dock = open_dock(viewer)
    assert dock.axis_kind.currentText() == "z", "the layer's axis label says z"
    load_with_button(qtbot, dock)
    assert dock.propagate_section.toggle.text() == "Propagate through z"
    assert viewer.layers["SAM 2 labels"].axis_labels[0] == "z"
    np.testing.assert_allclose(viewer.layers["SAM 2 labels"].scale, vol.spacing)
    rows, cols = np.nonzero(vol.labels[5] == 1)
    click_at(qtbot, dock, (5, np.median(rows), np.median(cols)))
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)
    assert "propagated 10 slices" in dock.status.text()
    assert "10 slices tracked" in dock.quality_label.text()

    # Export labels…: the form knows the axis is z and shows the voxel size; type a file, Export
    press(qtbot, dock.export_button)
    form = dock.export_form
    assert form.dialog.isVisible()
    assert form.form.tracked_axis.value == "z" and "2.5 × 0.8 × 0.8 mm" in form.voxel.value
    assert form.form.file.value.name == "CT_phantom_HU_labels.tif", "named after the image"
    out = tmp_path / "organ.tif"
    type_into(qtbot, form.form.file.line_edit.native, str(out))
    press(qtbot, form.form.call_button.native)
    assert not form.dialog.isVisible() and "labels exported" in dock.status.text()
    with tifffile.TiffFile(out) as tif:
        ij = tif.imagej_metadata
        np.testing.assert_array_equal(tif.asarray(), dock.labels_layer.data)
        x_res = tif.pages[0].tags["XResolution"].value
    assert ij.get("slices") == 10 and not ij.get("frames"), ij
    assert ij.get("spacing") == pytest.approx(2.5) and ij.get("unit") in ("mm", "millimeter")
    assert x_res[1] / x_res[0] == pytest.approx(0.8, rel=1e-3)

    # again as OME-TIFF: choosing the format renames the file; Enter exports
    press(qtbot, dock.export_button)
    choose(form.form.format.native, "OME-TIFF (.ome.tif)")
    assert str(form.form.file.value).endswith("organ.ome.tif")
    type_into(qtbot, form.form.file.line_edit.native, str(tmp_path / "organ.ome.tif"), enter=True)
    assert not form.dialog.isVisible()
    with tifffile.TiffFile(tmp_path / "organ.ome.tif") as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
        np.testing.assert_array_equal(tif.asarray(), dock.labels_layer.data)
        pixels = re.search(r"<Pixels [^>]*>", tif.ome_metadata).group(0)
    for attr in ('PhysicalSizeZ="2.5"', 'PhysicalSizeX="0.8"', 'PhysicalSizeXUnit="mm"'):
        assert attr in pixels, pixels


def test_4d_the_other_axis_follows_the_slider_and_names_itself(
    make_napari_viewer, hub_cache, no_alerts, qtbot, cells
):
    # (T, Z, Y, X)
    stack = np.stack([cells.image, np.roll(cells.image, 9, axis=2), cells.image[:, ::-1]], axis=1)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="tzyx", axis_labels=("t", "z", "y", "x"))
    dock = open_dock(viewer)
    assert dock.fixed_label.text() == "z (axis 1)" and dock.fixed_spin.maximum() == 2
    load_with_button(qtbot, dock)
    viewer.dims.set_current_step(1, 2)  # the user moves the z slider
    assert dock.fixed_spin.value() == 2
    r, c = _cell_centre(cells, 3)
    c_flipped = 63 - c
    click_at(qtbot, dock, (3, 2, r, c_flipped))
    labels = dock.labels_layer.data
    assert (labels[3, 2] == 1).any() and not labels[:, :2].any(), "only z = 2 of t = 3 is written"
    np.testing.assert_array_equal(labels[3, 2] == 1, dock.session.mask(3, 1))


def test_a_click_on_another_slice_says_so(make_napari_viewer, hub_cache, qtbot, cells):
    stack = np.stack([cells.image, cells.image], axis=1)
    viewer = make_napari_viewer()
    viewer.add_image(stack, name="tzyx", axis_labels=("t", "z", "y", "x"))
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    dock.follow_check.setChecked(False)
    viewer.dims.set_current_step(1, 1)
    click_at(qtbot, dock, (0, 1, 30, 30))
    assert "session tracks index 0" in dock.status.text() and "follow" in dock.status.text()
    assert not dock.labels_layer.data.any()
    assert len(dock.prompts.points.data) == 0, "the refused click does not stay on the layer"


def test_a_click_outside_the_image_is_refused_and_taken_off_the_layer(make_napari_viewer, hub_cache,
                                                                      qtbot, cells):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(cells.image, name="cells")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    click_at(qtbot, dock, (1, 30, 70))  # right of the 64 px frame
    assert dock.status.text() == "a click on frame 1 lies outside the image: it is ignored"
    assert len(dock.prompts.points.data) == 0 and not dock.labels_layer.data.any()
    click_at(qtbot, dock, (1, *_cell_centre(cells, 1)))  # the next click inside counts
    wait_idle(qtbot, dock)
    assert len(dock.prompts.points.data) == 1 and (dock.labels_layer.data[1] == 1).any()
    assert dock.session.prompted_frames(1) == [1]


def test_click_markers_keep_their_screen_size_and_leave_no_dot_elsewhere(make_napari_viewer, hub_cache,
                                                                         no_alerts, qtbot):
    """A click's marker is drawn on its frame; a frame without clicks shows none.

    With no point on the slice shown, napari draws one placeholder point of size 0 at the
    layer's origin, which the markers' minimum screen size would turn into a white dot at the
    image's corner: the minimum holds only while a point is in view.
    """
    from qtpy.QtWidgets import QApplication

    from napari_sam2._qt.prompt_layers import POINT_SCREEN_PX

    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((4, 64, 64), np.uint8), name="dark")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    click_at(qtbot, dock, (1, 32, 32))
    dock.labels_layer.visible = False  # only the markers can be bright on this black image
    points = dock.prompts.points

    def bright_pixels():
        QApplication.processEvents()
        shot = viewer.screenshot(canvas_only=True, flash=False)
        return int((shot[..., :3].max(axis=-1) > 150).sum())

    viewer.dims.set_current_step(0, 1)
    assert tuple(points.canvas_size_limits) == POINT_SCREEN_PX
    assert 40 < bright_pixels() < 400, "the click's marker (8-14 px wide) is drawn on its frame"
    viewer.dims.set_current_step(0, 0)
    assert points.canvas_size_limits[0] == 0, "no minimum size for napari's placeholder point"
    assert bright_pixels() == 0, "no dot on a frame without clicks"
    viewer.dims.set_current_step(0, 1)
    assert tuple(points.canvas_size_limits) == POINT_SCREEN_PX and bright_pixels() > 40
    no_alerts.check()


def test_the_dock_fits_a_small_screen(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((4, 32, 32), np.uint8))
    dock = open_dock(viewer)
    hint = dock.minimumSizeHint()
    assert hint.width() <= 360 and hint.height() <= 300, (hint.width(), hint.height())
    viewer.window._qt_window.resize(1366, 740)
    qtbot.wait(50)
    assert dock.width() <= 420
    assert viewer.window._qt_window.width() <= 1366
    # every button's text is readable ("Find objects on this frame" was cut to "ind objects on this frame")
    from qtpy.QtWidgets import QPushButton

    buttons = [b for b in dock.findChildren(QPushButton) if b.isVisible() and b.text()]
    assert len(buttons) > 10
    for button in buttons:
        text = button.fontMetrics().horizontalAdvance(button.text())
        assert button.width() >= text + 8, (button.text(), button.width(), text)
    # every model the dock offers is readable in its row (a truncated "sam2." hid the size)
    combo = dock.model_combo
    for i in range(combo.count()):
        choose(combo, combo.itemText(i))
        qtbot.wait(10)
        text = combo.fontMetrics().horizontalAdvance(combo.currentText())
        assert combo.width() >= text + 30, (combo.currentText(), combo.width(), text)
    # a layer name too long for its combo is whole in the combo's tooltip
    long_name = "cells ground truth (Cellpose, 2026-12-01)"
    viewer.add_labels(np.zeros((4, 32, 32), np.uint16), name=long_name)
    source = dock.mask_source
    assert source.currentText() == long_name
    assert source.width() < source.fontMetrics().horizontalAdvance(long_name)  # cut on screen...
    from qtpy.QtCore import QEvent, QPoint
    from qtpy.QtGui import QHelpEvent
    from qtpy.QtWidgets import QApplication

    here = QPoint(5, 5)  # the pointer rests on the combo
    QApplication.sendEvent(source, QHelpEvent(QEvent.Type.ToolTip, here, source.mapToGlobal(here)))
    assert source.toolTip().splitlines()[0] == long_name  # ...whole under the pointer


def test_the_wheel_scrolls_the_dock_and_changes_no_setting_on_the_way(make_napari_viewer, qtbot):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros((4, 32, 32), np.uint8))
    dock = open_dock(viewer)
    viewer.window._qt_window.resize(1366, 600)  # the dock scrolls
    qtbot.wait(50)
    bar = dock.scroll_area.verticalScrollBar()
    assert bar.maximum() > 0
    combos = (dock.direction_combo, dock.axis_kind, dock.model_combo, dock.precision_combo)
    spins = (dock.axis_spin, dock.start_spin)
    before = [c.currentIndex() for c in combos] + [s.value() for s in spins]
    start = bar.value()
    for widget in (*combos, *spins):
        turn_wheel(widget, -1)
    assert [c.currentIndex() for c in combos] + [s.value() for s in spins] == before
    assert bar.value() > start  # the dock scrolled instead


def test_the_dock_offers_every_model_by_name_with_what_it_costs():
    from napari_sam2._qt.panels import MODEL_CHOICES
    from napari_sam2.engine.models import MODEL_IDS

    assert list(MODEL_CHOICES) == list(MODEL_IDS)
    for name, tip in MODEL_CHOICES.items():
        assert MODEL_IDS[name] in tip and "download" in tip, name
    assert "hf auth login" in MODEL_CHOICES["sam3"] and "napari-sam2[edgetam]" in MODEL_CHOICES["edgetam"]


def test_seed_from_labels_keeps_every_id(make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer = make_napari_viewer()
    viewer.add_image(cells.image, name="cells")
    seeds = np.zeros_like(cells.labels)
    ids = [i for i in np.unique(cells.labels[2]) if i][:3]
    for new_id, old in zip((7, 42, 300), ids):  # ids of a Cellpose result: any values
        seeds[2][cells.labels[2] == old] = new_id
    viewer.add_labels(seeds, name="cellpose")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    dock.mask_source.setCurrentText("cellpose")
    dock.go_to_frame(2)
    press(qtbot, dock.seed_button)
    wait_idle(qtbot, dock)
    assert set(dock.objects) == {7, 42, 300}
    labels = dock.labels_layer.data
    for i in (7, 42, 300):
        np.testing.assert_array_equal(labels[2] == i, seeds[2] == i)  # a mask prompt is kept exactly
    assert "seeded 3 objects" in dock.status.text()

    # Undo prompt takes the whole seeding back: masks (the tracked ones too), objects in the
    # list, the engine's objects
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)
    assert np.isin(labels[[0, 1, 3]], [7, 42, 300]).any()
    press(qtbot, dock.undo_button)
    wait_idle(qtbot, dock)
    assert dock.status.text() == "undid the seeding of 3 objects on frame 2"
    assert not labels.any() and not dock.objects and dock.object_list.count() == 0
    assert not dock.session.objects
    no_alerts.check()


def test_hundreds_of_seeds_are_listed_and_selected_once(make_napari_viewer, hub_cache, no_alerts, qtbot,
                                                         monkeypatch):
    viewer = make_napari_viewer()
    image = np.zeros((3, 128, 128), np.uint8)
    seeds = np.zeros((3, 128, 128), np.uint16)
    for k in range(120):  # a 12 x 10 grid of 6 px cells, ids as a segmentation tool gives them
        r, c = divmod(k, 12)
        image[:, 4 + 10 * r:10 + 10 * r, 4 + 10 * c:10 + 10 * c] = 200
        seeds[0, 4 + 10 * r:10 + 10 * r, 4 + 10 * c:10 + 10 * c] = 1000 + 5 * k
    viewer.add_image(image, name="cells")
    viewer.add_labels(seeds, name="cellpose")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    dock.mask_source.setCurrentText("cellpose")
    dock.go_to_frame(0)
    selected = []
    set_active = dock.prompts.set_active
    monkeypatch.setattr(dock.prompts, "set_active",
                        lambda obj_id: selected.append(obj_id) or set_active(obj_id))
    press(qtbot, dock.seed_button)
    wait_idle(qtbot, dock)
    assert len(dock.objects) == dock.object_list.count() == 120
    # one selection for the whole list (each one redoes the prompt layers and the quality strip)
    assert selected == [1000 + 5 * 119] and dock.active_id == 1000 + 5 * 119
    assert "seeded 120 objects" in dock.status.text()


def test_loading_the_model_collects_garbage_before_any_propagation(make_napari_viewer, hub_cache, no_alerts,
                                                                   qtbot, cells, monkeypatch):
    import gc
    import threading

    calls = []
    collect = gc.collect
    monkeypatch.setattr(gc, "collect",
                        lambda *a: calls.append(threading.current_thread().name) or collect(*a))
    viewer = make_napari_viewer()
    viewer.add_image(cells.image, name="cells")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    assert "napari-sam2 model loading" in calls


def _objects_found_on_frame_1(make_napari_viewer, qtbot, cells):
    """A viewer with the cells and a model; Find objects pressed on frame 1 and done."""
    viewer = make_napari_viewer()
    viewer.add_image(cells.image, name="cells")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    dock.go_to_frame(1)
    press(qtbot, dock.find_button)
    wait_idle(qtbot, dock)
    return viewer, dock


def test_find_objects_puts_them_in_a_layer_to_review(make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer, dock = _objects_found_on_frame_1(make_napari_viewer, qtbot, cells)
    found = viewer.layers["SAM 2 found objects"].data
    assert found.shape == cells.image.shape and not found[[0, 2]].any(), "only frame 1 is filled"
    n = len(np.unique(found[1][found[1] > 0]))
    assert f"found {n} objects on frame 1" in dock.status.text()
    assert dock.mask_source.currentText() == "SAM 2 found objects", "ready for Seed from labels"
    assert dock.objects == {}, "nothing is an object before the review"
    assert not dock.cancel_button.isEnabled()

    # Cancel stops a search (seconds to minutes on a large frame on a CPU); nothing changes
    before = found.copy()
    dock.go_to_frame(2)
    press(qtbot, dock.find_button)
    assert dock.cancel_button.isEnabled() and "Cancel stops it" in dock.status.text()
    press(qtbot, dock.cancel_button)
    wait_idle(qtbot, dock)
    assert dock.status.text() == "finding objects on frame 2 cancelled: nothing changed"
    np.testing.assert_array_equal(viewer.layers["SAM 2 found objects"].data, before)
    assert not dock.cancel_button.isEnabled()
    no_alerts.check()


def test_finding_again_keeps_the_reviewed_objects_and_uses_the_settings(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells, monkeypatch):
    from napari_sam2 import Sam2Session

    asked = []
    real = Sam2Session.segment_everything

    def spy(self, frame, **kwargs):  # the real search, with what the dock asked for noted
        asked.append(kwargs)
        return real(self, frame, **kwargs)

    monkeypatch.setattr(Sam2Session, "segment_everything", spy)
    viewer, dock = _objects_found_on_frame_1(make_napari_viewer, qtbot, cells)
    first = viewer.layers["SAM 2 found objects"]
    first.data[1, 5:15, 5:15] = 77  # the user's review: an object SAM 2 missed, painted in
    reviewed = first.data.copy()

    press(qtbot, dock.find_section.toggle)  # "more (finding objects)": a finer grid, a zoom-in
    assert dock.find_section.toggle.isChecked() and not dock.find_section.body.isHidden()
    dock.find_grid.setValue(8)
    dock.find_zoom.setValue(1)
    dock.find_min_area.setValue(10)
    press(qtbot, dock.find_button)
    wait_idle(qtbot, dock)
    assert asked[0]["points_per_side"] == 16 and asked[0]["crop_n_layers"] == 0
    assert (asked[1]["points_per_side"], asked[1]["crop_n_layers"], asked[1]["min_area"]) == (8, 1, 10)
    np.testing.assert_array_equal(first.data, reviewed)  # the review stays
    second = viewer.layers["SAM 2 found objects [1]"]
    assert dock.mask_source.currentText() == second.name and not first.visible
    assert dock.status.text().endswith("the earlier ones stay in 'SAM 2 found objects'"), dock.status.text()
    no_alerts.check()


def test_alt_click_on_a_mask_selects_its_object_and_several_delete_at_once(
    make_napari_viewer, hub_cache, no_alerts, qtbot, cells
):
    from napari.utils.interactions import mouse_press_callbacks

    viewer = make_napari_viewer()
    viewer.add_image(cells.image, name="cells")
    seeds = np.zeros_like(cells.labels)
    ids = [i for i in np.unique(cells.labels[0]) if i][:3]
    for new_id, old in zip((5, 6, 9), ids):
        seeds[0][cells.labels[0] == old] = new_id
    viewer.add_labels(seeds, name="seeds")
    dock = open_dock(viewer)
    load_with_button(qtbot, dock)
    dock.mask_source.setCurrentText("seeds")
    dock.go_to_frame(0)
    press(qtbot, dock.seed_button)
    wait_idle(qtbot, dock)
    assert dock.active_id == 9
    rows, cols = np.nonzero(dock.labels_layer.data[0] == 6)

    class Event:  # an Alt-click as vispy reports it to the viewer
        type = "mouse_press"
        modifiers = ["Alt"]
        position = tuple(world(dock.labels_layer, (0, rows[0], cols[0])))
        handled = False
        is_dragging = False
        pos = np.zeros(2)
        dims_displayed = [1, 2]

    mouse_press_callbacks(viewer, Event())
    assert dock.active_id == 6 and dock.status.text() == "selected object 6"
    for row in range(dock.object_list.count()):  # Shift-click: 5 and 6 selected
        item = dock.object_list.item(row)
        item.setSelected(item.text() in ("object 5", "object 6"))
    press(qtbot, dock.delete_button)
    assert dock.object_list.count() == 1, "the list changes at once"
    wait_idle(qtbot, dock)  # the pixels go in the worker
    assert set(dock.objects) == {9} and dock.status.text() == "deleted object 5, object 6"
    labels = dock.labels_layer.data
    assert not np.isin(labels, [5, 6]).any() and (labels[0] == 9).any()


@pytest.mark.parametrize("native", [True, False], ids=["cpu-with-bf16", "cpu-without-bf16"])
def test_a_precision_chosen_in_the_dock_is_the_one_that_runs_and_is_saved(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells, tmp_path, monkeypatch, native):
    """bfloat16 runs when chosen; a session made in it replays in it where the CPU computes it.

    Where the CPU has no bfloat16 arithmetic (emulated, ~9x slower) the replay runs in the row's
    precision, and the user is told both times.
    """
    import torch

    from napari_sam2.engine import devices

    def native_precision(dtype, device):  # as a CPU with (or without) AMX / AVX-512 BF16 answers
        return True if dtype in (None, torch.float32) or device.type != "cpu" else native

    monkeypatch.setattr(devices, "native_precision", native_precision)

    viewer = make_napari_viewer(show=True)
    viewer.add_image(cells.image, name="cells")
    dock = open_dock(viewer)
    assert dock.precision_combo.currentText() == "auto"
    choose(dock.device_combo, "cpu")
    choose(dock.precision_combo, "bfloat16")
    load_with_button(qtbot, dock)
    assert dock.model.autocast_dtype == torch.bfloat16
    warned = _take_alerts(no_alerts, "no bfloat16 arithmetic")
    if native:
        assert dock.model_status.text().endswith("on cpu (bfloat16)"), dock.model_status.text()
        assert not warned
    else:  # the user's choice runs, and the warning says what to choose instead; the line stays
        assert dock.model_status.text().endswith(
            "on cpu (bfloat16, emulated here: ~9x slower than float32)"), dock.model_status.text()
        assert len(warned) == 1 and "9x slower than float32" in warned[0]
        assert "choose precision float32" in warned[0]
    r, c = _cell_centre(cells, 0)
    click_at(qtbot, dock, (0, r, c))
    assert (dock.labels_layer.data[0] == 1).any()
    assert dock.session.model is dock.model

    # the session file records the precision; a dock with no model loads it in that precision
    from qtpy.QtWidgets import QFileDialog

    path = tmp_path / "bf16.json"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(path), ""))
    choose(dock.model_combo, "sam2.1-large")  # chosen, not loaded: the masks are tiny's
    press(qtbot, dock.save_button)
    settings = json.loads(path.read_text())["settings"]
    assert (settings["precision"], settings["model"]) == ("bfloat16", "sam2.1-tiny")
    other_viewer = make_napari_viewer()
    other_viewer.add_image(cells.image, name="cells")
    other = open_dock(other_viewer)
    assert other.precision_combo.currentText() == "auto"
    choose(other.model_combo, "edgetam")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    press(qtbot, other.load_session_button)
    wait_idle(qtbot, other)
    warned = _take_alerts(no_alerts, "the session was made in bfloat16")
    if native:
        assert other.model.autocast_dtype == torch.bfloat16
        assert other.precision_combo.currentText() == "bfloat16"
        assert not warned
    else:
        assert other.model.autocast_dtype is None  # float32: auto, the row's precision
        assert other.precision_combo.currentText() == "auto"
        assert len(warned) == 1 and "9x slower than float32" in warned[0] and "in auto" in warned[0]
    assert (other.model_combo.currentText(), other.model_path.text()) == ("sam2.1-tiny", "")
    assert other.status.text().startswith("session loaded: 1 object, labels from bf16.labels.tif")
    np.testing.assert_array_equal(other.labels_layer.data, dock.labels_layer.data)
    no_alerts.check()


def _take_alerts(alerts, text: str) -> list[str]:
    """The alerts seen so far that contain ``text``, taken off the list (expected ones)."""
    taken = [a for a in alerts.seen if text in a]
    alerts.seen[:] = [a for a in alerts.seen if text not in a]
    return taken
