"""A box or a mask replaces an object's clicks on its frame: the Points layer shows what counts.

SAM 2 reads a frame's box or mask prompt in place of the clicks made there before (clicks made
afterwards refine it). The dock takes those clicks off the Points layer (Undo brings them back),
so the layer shows what the engine holds, as a loaded session does; and removing one of those
old clicks no longer replaces the mask with the clicks left.
"""

from __future__ import annotations

import numpy as np
import pytest
from _user_actions import click_at, drag_on_canvas, press, viewer_with_model, wait_idle, world

from napari_sam2.samples import make_cells_timelapse


@pytest.fixture
def cells():
    return make_cells_timelapse(n_frames=6, shape=(64, 64), n_cells=3, seed=1)


def _cell(cells, frame, k=0):
    lab = cells.labels[frame]
    cell = lab == [i for i in np.unique(lab) if i][k]
    rows, cols = np.nonzero(cell)
    return cell, (float(np.median(rows)), float(np.median(cols)))


def _one_click(make_napari_viewer, qtbot, cells):
    """A viewer with a model and object 1 clicked on a cell of frame 2: (viewer, dock, cell, centre)."""
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    cell, centre = _cell(cells, 2)
    click_at(qtbot, dock, (2, *centre))
    assert len(_clicks(dock)) == 1
    return viewer, dock, cell, centre


def _clicks(dock):
    return [tuple(map(int, c[:2])) for c in dock.prompts._groups().get((2, 1), [])]


def test_use_as_mask_takes_the_frames_clicks_away_and_undo_brings_them_back(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    cell, centre = _cell(cells, 2)
    seeds = np.zeros_like(cells.labels)
    seeds[2][cell] = 5
    viewer.add_labels(seeds, name="cellpose")
    dock.prompts.select_points()
    click_at(qtbot, dock, (2, *centre))
    click_at(qtbot, dock, (2, centre[0] + 3, centre[1]))
    click_at(qtbot, dock, (4, *centre))  # a click on another frame stays
    assert len(dock.prompts.points.data) == 3
    dock.mask_source.setCurrentText("cellpose")
    dock.mask_id.setValue(5)
    dock.go_to_frame(2)
    press(qtbot, dock.mask_button)
    wait_idle(qtbot, dock)
    assert [p.kind for p in dock.session.prompts(1) if p.frame == 2] == ["mask"]
    assert _clicks(dock) == [], "the clicks the mask replaced are off the layer"
    assert len(dock.prompts.points.data) == 1
    np.testing.assert_array_equal(dock.labels_layer.data[2] == 1, cell)

    press(qtbot, dock.undo_button)  # the mask goes, the two clicks come back, in the engine too
    wait_idle(qtbot, dock)
    assert len(_clicks(dock)) == 2 and len(dock.prompts.points.data) == 3
    assert {p.kind for p in dock.session.prompts(1) if p.frame == 2} == {"points"}

    press(qtbot, dock.mask_button)  # the mask again, then the user removes the click on frame 4
    wait_idle(qtbot, dock)
    points = dock.prompts.points
    points.selected_data = {0}
    points.remove_selected()
    wait_idle(qtbot, dock)
    assert [p.kind for p in dock.session.prompts(1) if p.frame == 2] == ["mask"], "the mask still counts"
    np.testing.assert_array_equal(dock.labels_layer.data[2] == 1, cell)
    no_alerts.check()


def test_a_box_takes_the_frames_clicks_away_and_later_clicks_refine_it(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    viewer, dock, cell, centre = _one_click(make_napari_viewer, qtbot, cells)
    rows, cols = np.nonzero(cell)
    viewer.layers.selection.active = dock.prompts.shapes
    dock.prompts.shapes.mode = "add_rectangle"
    image = dock.image_layer
    drag_on_canvas(viewer, world(image, (2, rows.min() - 2, cols.min() - 2)),
                   world(image, (2, rows.max() + 2, cols.max() + 2)))
    wait_idle(qtbot, dock)
    assert _clicks(dock) == [] and [p.kind for p in dock.session.prompts(1)] == ["box"]
    dock.prompts.select_points()
    click_at(qtbot, dock, (2, *centre))  # a click after the box refines it
    assert len(_clicks(dock)) == 1
    assert [p.kind for p in dock.session.prompts(1)] == ["box", "points"], "the box still counts"
    press(qtbot, dock.undo_button)
    wait_idle(qtbot, dock)
    press(qtbot, dock.undo_button)  # the box: the first click comes back
    wait_idle(qtbot, dock)
    assert dock.prompts.shapes.nshapes == 0 and len(_clicks(dock)) == 1
    assert [p.kind for p in dock.session.prompts(1)] == ["points"]
    no_alerts.check()


def test_seeding_over_a_clicked_object_hides_its_clicks_and_undo_brings_them_back(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    """Seed from labels re-prompts an existing object with its label: its clicks there give way."""
    viewer, dock, cell, centre = _one_click(make_napari_viewer, qtbot, cells)
    seeds = np.zeros_like(cells.labels)
    seeds[2][cell] = 1  # the clicked object's id
    seeds[2][_cell(cells, 2, 1)[0]] = 8
    viewer.add_labels(seeds, name="cellpose")
    dock.mask_source.setCurrentText("cellpose")
    press(qtbot, dock.seed_button)
    wait_idle(qtbot, dock)
    assert set(dock.objects) == {1, 8} and _clicks(dock) == []
    assert [p.kind for p in dock.session.prompts(1)] == ["mask"]
    press(qtbot, dock.undo_button)
    wait_idle(qtbot, dock)
    assert set(dock.objects) == {1} and len(_clicks(dock)) == 1
    assert [p.kind for p in dock.session.prompts(1)] == ["points"]
    assert dock.status.text() == ("undid the seeding of 2 objects on frame 2; one of them had earlier "
                                  "prompts, back now"), dock.status.text()
    no_alerts.check()

