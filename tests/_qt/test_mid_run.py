"""What a user does while a propagation runs: moves sliders, clicks, reverts.

A write on its way lands on the plane it was computed for, whatever the viewer shows meanwhile;
a click waits for the run and says so; Revert last run stops the run and reverts it.
"""

from __future__ import annotations

import numpy as np
import pytest
from _user_actions import (
    click_at,
    click_canvas,
    press,
    viewer_with_model,
    wait_idle,
    world,
)

from napari_sam2.samples import make_cells_timelapse


@pytest.fixture
def cells():
    return make_cells_timelapse(n_frames=30, shape=(64, 64), n_cells=3, seed=1)


def _centre(cells, frame, k=0):
    lab = cells.labels[frame]
    rows, cols = np.nonzero(lab == np.unique(lab[lab > 0])[k])
    return float(np.median(rows)), float(np.median(cols))


def _start_run(qtbot, dock, frames_done=2):
    press(qtbot, dock.propagate_button)
    qtbot.waitUntil(lambda: dock.progress.done >= frames_done, timeout=60_000)
    assert dock.cancel_button.isEnabled(), "the run ended before the test could act in it"


@pytest.fixture
def running(make_napari_viewer, hub_cache, no_alerts, qtbot, cells):
    """A dock with one object clicked on frame 0 of a 30-frame stack, ready to propagate."""
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image)
    dock.go_to_frame(0)
    click_canvas(viewer, world(dock.image_layer, (0, *_centre(cells, 0))))
    wait_idle(qtbot, dock)
    assert (dock.labels_layer.data[0] == 1).any()
    return dock


def test_a_click_during_a_run_says_it_waits_then_counts(running, qtbot, cells, no_alerts):
    dock = running
    _start_run(qtbot, dock)
    dock.go_to_frame(20)
    click_canvas(dock.viewer, world(dock.image_layer, (20, *_centre(cells, 20, 1))))
    assert "click on frame 20 waits for the running task" in dock.status.text(), dock.status.text()
    wait_idle(qtbot, dock)
    assert dock.status.text() == "object 1: click on frame 20"
    assert 20 in dock.session.prompted_frames(1)
    np.testing.assert_array_equal(dock.labels_layer.data[20] == 1, dock.session.mask(20, 1))
    no_alerts.check()


def test_revert_during_a_run_stops_it_and_reverts_it(running, qtbot, no_alerts):
    dock = running
    clicked = dock.labels_layer.data.copy()
    _start_run(qtbot, dock)
    press(qtbot, dock.revert_button)
    wait_idle(qtbot, dock)
    assert dock.status.text().startswith("reverted the last propagation"), dock.status.text()
    np.testing.assert_array_equal(dock.labels_layer.data, clicked)
    no_alerts.check()


def test_moving_the_z_slider_mid_run_keeps_every_write_on_its_own_slice(
        make_napari_viewer, hub_cache, no_alerts, qtbot):
    cells = make_cells_timelapse(n_frames=30, shape=(64, 64), n_cells=3, seed=1)
    stack = np.stack([cells.image, cells.image], axis=1)  # (t, z, y, x)
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, stack, name="tzyx",
                                     axis_labels=("t", "z", "y", "x"))
    assert dock.follow_check.isChecked()
    click_at(qtbot, dock, (0, 0, *_centre(cells, 0)))
    session = dock.session
    press(qtbot, dock.propagate_button)
    qtbot.waitUntil(lambda: dock.progress.done >= 2, timeout=60_000)
    viewer.dims.set_current_step(1, 1)  # the user looks at z = 1 while t is tracked at z = 0
    assert dock.fixed_spin.value() == 1
    wait_idle(qtbot, dock)
    labels = dock.labels_layer.data
    assert not labels[:, 1].any(), "nothing of z = 0's run is written on z = 1"
    done = [t for t in range(30) if (labels[t, 0] == 1).any()]
    assert len(done) == 30, f"the run went on at z = 0 to its end: {done}"
    np.testing.assert_array_equal(labels[29, 0] == 1, session.mask(29, 1))
    no_alerts.check()
