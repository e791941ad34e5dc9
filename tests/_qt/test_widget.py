"""The dock widget in a real napari viewer (under Xvfb), driving a small random SAM 2."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_sam2.samples import make_cells_timelapse


@pytest.fixture(scope="module")
def cells():
    return make_cells_timelapse(n_frames=8, shape=(64, 64), n_cells=3, seed=1)


def _dock(viewer, image, tiny_model_dir, **layer_kwargs):
    from napari_sam2._qt.widget import Sam2Widget

    viewer.add_image(image, name="cells", **layer_kwargs)
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 segmentation")
    assert isinstance(widget, Sam2Widget)
    widget.synchronous = True
    widget.model_path.setText(str(tiny_model_dir))
    widget.device_combo.setCurrentText("cpu")
    widget.load_chosen_model()
    assert widget.model is not None, getattr(widget, "last_error", None)
    return widget


def _click(widget, frame, row, col, world=False):
    """A click as napari makes it: a point added to the Points layer (world or data coords)."""
    widget.ensure_session()
    pts = widget.prompts.points
    coords = np.array([frame, row, col], float)
    if world:
        coords = pts.world_to_data(coords)
    pts.add(coords)


@pytest.fixture
def widget(make_napari_viewer, cells, tiny_model_dir):
    return _dock(make_napari_viewer(), cells.image, tiny_model_dir)


def test_click_shows_a_mask_on_that_frame(widget):
    obj = widget.new_object()
    _click(widget, 2, 30, 30)
    labels = widget.labels_layer.data
    expected = widget.session.mask(2, obj)
    assert expected.any(), "the test model must see something"
    np.testing.assert_array_equal(labels[2] == obj, expected)
    assert not labels[[0, 1, 3]].any(), "only the clicked frame changes"
    # a second, negative click refines the same object on the same frame
    widget.toggle_polarity()
    _click(widget, 2, 5, 5)
    assert widget.session.prompts(obj)[-1].labels.tolist() == [0]
    np.testing.assert_array_equal(labels[2] == obj, widget.session.mask(2, obj))


def test_propagate_fills_every_frame_keeps_user_labels_and_reverts_exactly(widget):
    obj = widget.new_object()
    _click(widget, 0, 30, 30)
    labels = widget.labels_layer.data
    labels[5, :4, :4] = 99  # a label the user painted
    before = labels.copy()
    widget.propagate()
    q = widget.session.quality(obj)
    assert np.isfinite(q).all(), "every frame was tracked"
    for f in range(8):
        assert (labels[f] == obj).any(), f"frame {f} has no mask"
    assert (labels[5, :4, :4] == 99).all(), "the user's label survives"
    assert widget.revert_last_run() is not None
    np.testing.assert_array_equal(labels, before)


def test_cancel_keeps_finished_frames_with_the_real_worker(make_napari_viewer, tiny_model_dir, qtbot):
    stack = make_cells_timelapse(n_frames=60, shape=(48, 48), n_cells=2, seed=2).image
    widget = _dock(make_napari_viewer(), stack, tiny_model_dir)
    obj = widget.new_object()
    _click(widget, 0, 24, 24)
    widget.synchronous = False  # from here on: napari's thread worker
    widget.propagate()
    # the bar is redrawn a few times a second: its count is exact at every frame
    qtbot.waitUntil(lambda: widget.progress.done >= 3, timeout=60_000)
    qtbot.mouseClick(widget.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.tasks.busy, timeout=60_000)
    labels = widget.labels_layer.data
    painted = {f for f in range(60) if (labels[f] == obj).any()}
    tracked = set(np.flatnonzero(np.isfinite(widget.session.quality(obj)[:, 0])))
    assert 3 <= len(tracked) < 60, "cancelled part-way"
    assert painted <= tracked and len(painted) >= 3, "finished frames are kept"
    for f in range(60):  # every frame the engine finished is painted, and only those
        expected = widget.session.mask(f, obj) if f in tracked else np.zeros((48, 48), bool)
        np.testing.assert_array_equal(labels[f] == obj, expected, err_msg=f"frame {f}")
    # the widget is usable afterwards: a new run completes
    widget.propagate()
    qtbot.waitUntil(lambda: not widget.tasks.busy, timeout=120_000)
    assert np.isfinite(widget.session.quality(obj)).all()


def test_world_coordinates_respect_scale_and_translate(make_napari_viewer, cells, tiny_model_dir):
    plain = _dock(make_napari_viewer(), cells.image, tiny_model_dir)
    scaled = _dock(make_napari_viewer(), cells.image, tiny_model_dir,
                   scale=(1.0, 2.0, 0.5), translate=(0.0, 10.0, -5.0))
    for w in (plain, scaled):
        w.new_object()
    _click(plain, 3, 20, 40)
    _click(scaled, 3, 10 + 2.0 * 20, -5 + 0.5 * 40, world=True)  # the same pixel, in world units
    np.testing.assert_array_equal(plain.labels_layer.data, scaled.labels_layer.data)
    assert plain.labels_layer.data[3].any()
    np.testing.assert_allclose(scaled.labels_layer.scale, [1.0, 2.0, 0.5])


def test_mask_prompt_from_a_labels_layer(widget, cells):
    seed = (cells.labels == cells.labels[4][cells.labels[4] > 0][0]).astype(np.uint8) * 7
    widget.viewer.add_labels(seed, name="seeds")
    widget._refresh_layer_choices()
    widget.mask_source.setCurrentText("seeds")
    widget.mask_id.setValue(7)
    obj = widget.new_object()
    widget.go_to_frame(4)
    widget.mask_from_labels()
    np.testing.assert_array_equal(widget.labels_layer.data[4] == obj, seed[4] == 7)


def test_undo_prompt_and_session_round_trip(widget, make_napari_viewer, cells, tiny_model_dir, tmp_path):
    obj = widget.new_object()
    _click(widget, 1, 30, 30)
    first = widget.labels_layer.data[1].copy()
    _click(widget, 1, 50, 50)
    widget.undo_prompt()
    np.testing.assert_array_equal(widget.labels_layer.data[1], first)
    assert len(widget.prompts.points.data) == 1, "the undone click leaves the Points layer"
    _click(widget, 4, 20, 20)
    path = widget.save_session(tmp_path / "session.json")

    other = _dock(make_napari_viewer(), cells.image, tiny_model_dir)
    other.load_session(path)
    assert other.objects == {obj: f"object {obj}"}
    for f in (1, 4):
        np.testing.assert_array_equal(other.labels_layer.data[f], widget.labels_layer.data[f])
    assert len(other.prompts.points.data) == 2



def test_a_loaded_session_shows_only_the_prompts_that_still_count(widget, tmp_path):
    import json

    path = tmp_path / "by_hand.json"
    path.write_text(json.dumps({"format": "napari-sam2-session", "version": 1, "objects": [
        {"id": 1, "name": "cell", "prompts": [
            {"frame": 1, "points": [[10, 10], [12, 40]], "labels": [1, 0]},
            {"frame": 1, "box": [[20, 20], [40, 45]]},                      # replaces the clicks
            {"frame": 1, "points": [[30, 30]], "labels": [1]},              # refines the box
            {"frame": 2, "points": [[15, 15]], "labels": [1]},
            {"frame": 2, "points": [[35, 35]], "labels": [0], "replace": True},
            {"frame": 3, "box": [[5, 5], [20, 20]]},
            {"frame": 3, "points": [[50, 50]], "labels": [1], "replace": True},  # replaces the box
        ]}]}))
    widget.load_session(path)
    engine = [(p.frame, p.kind) for p in widget.session.prompts(1)]
    assert engine == [(1, "box"), (1, "points"), (2, "points"), (3, "points")]
    pts = widget.prompts.points
    drawn = sorted((*np.round(p).astype(int).tolist(), bool(pos))
                   for p, pos in zip(pts.data, pts.features["positive"]))
    assert drawn == [(1, 30, 30, True), (2, 35, 35, False), (3, 50, 50, True)]
    assert widget.prompts.shapes.nshapes == 1, "only frame 1's box still counts"

def test_quality_strip_flags_and_jumps(widget):
    widget.new_object()
    _click(widget, 0, 30, 30)
    widget.propagate()
    widget.strip.iou_threshold = 1.01  # flag everything: jumping must visit flagged frames
    widget.go_to_frame(0)
    widget.next_flagged()
    assert widget.current_frame() == 1
    widget.strip.frame_clicked.emit(6)
    assert widget.current_frame() == 6
    widget.previous_flagged()
    assert widget.current_frame() == 5
    assert "8 frames tracked" in widget.quality_label.text()


def test_shortcuts_are_unbound_when_the_dock_is_closed(make_napari_viewer):
    from napari.utils.key_bindings import coerce_keybinding

    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((4, 32, 32), np.uint8))

    def users_own(viewer):  # a binding of the user's that the widget takes over while open
        pass

    viewer.bind_key(",", users_own)
    dock, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 segmentation")
    assert viewer.keymap[coerce_keybinding("n")].__name__ == "sam2_new_object"
    assert viewer.keymap[coerce_keybinding(",")] is not users_own
    dock.destroyOnClose()  # what the dock's close button does
    assert coerce_keybinding("n") not in viewer.keymap
    assert coerce_keybinding("Shift-P") not in viewer.keymap
    assert viewer.keymap[coerce_keybinding(",")] is users_own, "the user's binding is back"
    # the closed widget no longer follows the viewer
    viewer.add_image(np.zeros((4, 32, 32), np.uint8), name="later")
    assert widget.image_combo.findText("later") == -1


def test_loading_a_session_in_the_real_worker_adds_layers_on_the_gui_thread(
    widget, make_napari_viewer, cells, tiny_model_dir, tmp_path, qtbot
):
    import threading

    obj = widget.new_object()
    _click(widget, 3, 30, 30)
    path = widget.save_session(tmp_path / "session.json")

    viewer = make_napari_viewer()
    viewer.add_image(cells.image, name="cells")
    _, other = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 segmentation")
    other.device_combo.setCurrentText("cpu")
    threads = []
    viewer.layers.events.inserted.connect(lambda e: threads.append(threading.current_thread()))
    other.load_session(path)  # no model loaded yet: it loads the session's model first
    qtbot.waitUntil(lambda: not other.tasks.busy and not len(other.tasks), timeout=60_000)
    assert other.model is not None and other.objects == {obj: f"object {obj}"}
    assert len(threads) == 3 and all(t is threading.main_thread() for t in threads)
    np.testing.assert_array_equal(other.labels_layer.data, widget.labels_layer.data)


def test_channels_of_an_rgb_stack_equal_the_same_channels_as_separate_layers(
    make_napari_viewer, cells, tiny_model_dir
):
    red = (cells.image // 16).astype(np.uint8)
    green = np.roll(red, 5, axis=2)
    blue = np.full_like(red, 200)
    rgb = np.stack([red, green, blue], axis=-1)  # (T, Y, X, 3): napari shows it as RGB

    as_rgb = _dock(make_napari_viewer(), rgb, tiny_model_dir)
    assert as_rgb.channels_edit.isEnabled()
    as_rgb.channels_edit.setText("0,1")  # red and green only: the blue plane is ignored
    as_rgb.channels_edit.editingFinished.emit()  # what Enter or leaving the field does
    as_rgb.new_object()
    _click(as_rgb, 2, 30, 30)
    assert as_rgb.session_channels == [0, 1]

    layers = _dock(make_napari_viewer(), red, tiny_model_dir, contrast_limits=(0, 255))
    layers.viewer.add_image(green, name="green", contrast_limits=(0, 255))
    layers.green_combo.setCurrentText("green")
    layers.new_object()
    _click(layers, 2, 30, 30)
    assert layers.labels_layer.data.shape == red.shape
    assert (layers.labels_layer.data[2] > 0).any()
    np.testing.assert_array_equal(as_rgb.labels_layer.data, layers.labels_layer.data)

    # a channel that does not exist is a clear message, and the widget keeps working
    as_rgb.channels_edit.setText("5")
    as_rgb.channels_edit.editingFinished.emit()
    assert "channel 5" in str(as_rgb.last_error)
    # ... that leaves the session as it was: its prompts are still there to propagate
    assert as_rgb.session is not None and as_rgb.session_channels == [0, 1]
    assert as_rgb.session.prompted_frames(as_rgb.active_id) == [2]
    as_rgb.channels_edit.setText("0,1")
    as_rgb.channels_edit.editingFinished.emit()
    _click(as_rgb, 3, 30, 30)
    assert (as_rgb.labels_layer.data[3] > 0).any()


def test_model_loads_in_the_real_worker_with_progress_and_failures_are_notified(
    make_napari_viewer, cells, tiny_model_dir, qtbot, tmp_path
):
    viewer = make_napari_viewer()
    viewer.add_image(cells.image, name="cells")
    _, widget = viewer.window.add_plugin_dock_widget("napari-sam2", "SAM 2 segmentation")
    widget.device_combo.setCurrentText("cpu")

    widget.model_path.setText(str(tmp_path / "missing-model"))
    widget.load_chosen_model()
    qtbot.waitUntil(lambda: not widget.tasks.busy, timeout=30_000)
    assert widget.model is None
    assert "missing-model" in str(widget.last_error)
    assert widget.model_status.text() == "no model loaded"
    assert widget.load_button.isEnabled(), "a failed load leaves the widget usable"

    widget.model_path.setText(str(tiny_model_dir))
    widget.load_chosen_model()
    assert not widget.load_button.isEnabled()
    qtbot.waitUntil(lambda: not widget.tasks.busy, timeout=60_000)
    assert widget.model is not None and str(widget.model.device) == "cpu"
    assert widget.model_progress, "the engine's progress reached the GUI thread"
    assert widget.load_button.isEnabled() and "on cpu" in widget.model_status.text()


def test_propagated_frames_are_drawn_only_when_on_screen(widget):
    obj = widget.new_object()
    _click(widget, 0, 30, 30)
    widget.go_to_frame(6)
    before = widget.view.refreshes
    widget.propagate()  # writes frames 1-7; only frame 6 is on screen
    assert all((widget.labels_layer.data[f] == obj).any() for f in range(8))
    assert widget.view.refreshes - before <= 2, "frame 6 once, then the thumbnail at the end"
    assert widget.view.refreshes - before >= 1, "the frame on screen is shown"


def test_progress_bar_counts_every_frame_and_redraws_at_a_bounded_rate(qtbot):
    from napari_sam2._qt.sections import ProgressLine

    bar = ProgressLine(min_interval=3600.0)  # nothing due in between: only the start and the end
    qtbot.addWidget(bar)
    shown = []
    bar.valueChanged.connect(shown.append)
    bar.start(10, "slices")
    for k in range(1, 10):
        bar.step()
        assert bar.done == k
    assert bar.value() == 0 and bar.text().startswith("0 / 10 slices"), "not redrawn per frame"
    bar.step()
    assert bar.value() == 10 and bar.text().startswith("10 / 10 slices"), "the last frame is shown"
    assert shown == [10]
    bar.start(5)
    bar.step(2)
    bar.show_count()  # what the dock calls when a run ends early (cancel, error)
    assert bar.value() == 2 and bar.text().startswith("2 / 5 frames")


def test_counts_in_the_status_line_agree_with_their_number():
    from napari_sam2._qt.sections import counted

    assert counted(1) == "1 object" and counted(0) == "0 objects" and counted(200) == "200 objects"
    assert counted(1, "frames") == "1 frame" and counted(1, "slices") == "1 slice"
    assert counted(12, "slices") == "12 slices"


def test_names_in_the_status_line_read_as_a_list():
    from napari_sam2._qt.sections import listed

    assert listed(["a"]) == "'a'" and listed(["a", "b"]) == "'a' and 'b'"
    assert listed(["SAM 2 labels", "SAM 2 points", "SAM 2 boxes"]) == \
        "'SAM 2 labels', 'SAM 2 points' and 'SAM 2 boxes'"
