"""A label write is shown by redrawing only its box, and the canvas shows what a full refresh would."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2._qt.labels_view import LabelsView, show_box


def _canvas(viewer) -> np.ndarray:
    return viewer.screenshot(canvas_only=True, flash=False)


def _viewer_with_labels(make_napari_viewer, data):
    viewer = make_napari_viewer(show=True)
    viewer.add_image(np.zeros(data.shape, np.uint8), name="image")
    layer = viewer.add_labels(data, name="labels")
    viewer.dims.set_current_step(0, 2)
    return viewer, layer


@pytest.mark.parametrize("display", ["default", "selected label only", "direct colours", "uint32"])
def test_a_box_is_shown_as_a_full_refresh_shows_it(make_napari_viewer, display):
    dtype = np.uint32 if display == "uint32" else np.uint16
    viewer, layer = _viewer_with_labels(make_napari_viewer, np.zeros((4, 120, 160), dtype))
    if display == "selected label only":
        layer.selected_label, layer.show_selected_label = 300, True
    if display == "direct colours":
        from napari.utils.colormaps import DirectLabelColormap

        layer.colormap = DirectLabelColormap(color_dict={None: "yellow", 7: "red", 300: "blue"})
    before = _canvas(viewer)
    layer.data[2, 30:70, 40:90] = 7  # written behind napari's back, as the dock writes
    layer.data[2, 50:60, 60:80] = 300
    layer.data[1, :, :] = 5  # not on screen
    assert show_box(layer, (slice(2, 3), slice(30, 70), slice(40, 90)))
    shown = _canvas(viewer)
    assert not np.array_equal(shown, before), "the write is on the canvas"
    layer.refresh()  # napari's own full redraw
    np.testing.assert_array_equal(shown, _canvas(viewer))


def test_labels_view_shows_boxes_and_falls_back_to_a_refresh(make_napari_viewer):
    viewer, layer = _viewer_with_labels(make_napari_viewer, np.zeros((4, 120, 160), np.uint16))
    view = LabelsView(min_interval=0)
    view.set_layer(layer)
    layer.data[2, 10:20, 10:20] = 3
    layer.data[2, 90:100, 100:150] = 4
    view.written(True, box=(slice(2, 3), slice(10, 20), slice(10, 20)))
    view.written(True, box=(slice(2, 3), slice(90, 100), slice(100, 150)))
    assert (view.refreshes, view.box_refreshes) == (2, 2)
    shown = _canvas(viewer)
    layer.refresh()
    np.testing.assert_array_equal(shown, _canvas(viewer))
    view.written(True)  # a write without a box: napari's refresh
    assert (view.refreshes, view.box_refreshes) == (3, 2)
    view.written(False, box=(slice(1, 2), slice(0, 5), slice(0, 5)))  # off screen: nothing
    assert view.refreshes == 3


@pytest.mark.parametrize("case", ["3-D view", "contours", "not numpy"])
def test_boxes_are_not_shown_where_napari_needs_its_refresh(make_napari_viewer, case):
    data = np.zeros((4, 40, 50), np.uint16)
    if case == "not numpy":
        zarr = pytest.importorskip("zarr")
        store = zarr.zeros(data.shape, dtype=data.dtype, chunks=(1, 40, 50))
        viewer, layer = _viewer_with_labels(make_napari_viewer, store)
    else:
        viewer, layer = _viewer_with_labels(make_napari_viewer, data)
    if case == "3-D view":
        viewer.dims.ndisplay = 3
    if case == "contours":
        layer.contour = 1
    assert not show_box(layer, (slice(2, 3), slice(0, 10), slice(0, 10)))


def test_a_click_and_its_undo_redraw_only_their_box(make_napari_viewer, tiny_model_dir):
    from test_widget import _dock

    from napari_sam2.samples import make_cells_timelapse

    viewer = make_napari_viewer(show=True)
    image = make_cells_timelapse(n_frames=4, shape=(96, 128), n_cells=3, seed=1).image
    widget = _dock(viewer, image, tiny_model_dir)
    obj = widget.new_object()
    widget.go_to_frame(1)
    empty = _canvas(viewer)
    widget.prompts.points.add(np.array([1, 40, 50], float))
    assert (widget.labels_layer.data[1] == obj).any()
    assert widget.view.box_refreshes == 1
    clicked = _canvas(viewer)
    assert not np.array_equal(clicked, empty)
    widget.labels_layer.refresh()
    np.testing.assert_array_equal(clicked, _canvas(viewer))
    widget.undo_prompt()
    assert not widget.labels_layer.data.any()
    assert widget.view.box_refreshes == 2
    np.testing.assert_array_equal(_canvas(viewer), empty)
