"""Export labels… of a 4-D image (a time-lapse of z-stacks) writes the whole volume.

The dock tracks one stack at a time (through time at one z slice, or through z at one time
point), but the labels layer holds the work done on every stack: the export writes all of it,
as a ``(T, Z, Y, X)`` volume with the frame interval and the z step, whichever axis is tracked.
"""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from _user_actions import cell_centre, choose, click_at, press, type_into, viewer_with_model, wait_idle

from napari_sam2.io.readers import open_stack
from napari_sam2.samples import make_cells_timelapse


@pytest.fixture
def cells():  # 8 frames of three 64 x 64 cells (the z slices are made from them below)
    return make_cells_timelapse(n_frames=8, shape=(64, 64), n_cells=3, seed=1)


def _tzyx(cells):
    """(T, Z, Y, X) = (8, 3, 64, 64): three z slices of the cells, shifted and upside down."""
    return np.stack([cells.image, np.roll(cells.image, 9, axis=2), cells.image[:, ::-1]], axis=1)


def _export_form_showing_the_volume(qtbot, dock, tracked: str):
    """Press Export labels…: the form names the tracked axis and the whole (8 x 3) volume's steps."""
    press(qtbot, dock.export_button)
    form = dock.export_form
    assert form.form.tracked_axis.value == tracked
    text = form.voxel.value
    assert "T × Z = 8 × 3" in text and "2 × 0.5 × 0.5 µm" in text and "every 1.5 s" in text, text
    return form


def _imagej_volume(path):
    """The labels of an ImageJ TIFF that must be an (8, 3) TZYX hyperstack, 1.5 s and 2 µm apart."""
    with tifffile.TiffFile(path) as tif:
        ij = tif.imagej_metadata
        assert tif.is_imagej and tif.series[0].axes == "TZYX"
        written = tif.asarray()
    assert (ij["frames"], ij["slices"]) == (8, 3), ij
    assert ij["finterval"] == pytest.approx(1.5) and ij["spacing"] == pytest.approx(2.0), ij
    assert written.shape == (8, 3, 64, 64)
    return written


def test_4d_export_tracked_through_time_writes_every_z_slice(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells, tmp_path):
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, _tzyx(cells), name="tzyx",
                                     axis_labels=("t", "z", "y", "x"), scale=(1.5, 2.0, 0.5, 0.5),
                                     units=("s", "µm", "µm", "µm"))
    assert dock.axis_kind.currentText() == "time" and dock.follow_check.isChecked()
    viewer.dims.set_current_step(1, 0)
    r, c = cell_centre(cells, 3)
    click_at(qtbot, dock, (3, 0, r, c))  # an object on z = 0
    viewer.dims.set_current_step(1, 2)  # the user moves the z slider: the dock follows
    assert dock.fixed_spin.value() == 2
    r, c = cell_centre(cells, 5)
    click_at(qtbot, dock, (5, 2, 63 - r, c))  # and one on z = 2 (upside down there)
    labels = dock.labels_layer.data
    assert (labels[3, 0] > 0).any() and (labels[5, 2] > 0).any(), "the test model must see something"

    # Export labels…: the form says the whole volume goes, with both steps
    form = _export_form_showing_the_volume(qtbot, dock, "time")
    out = tmp_path / "tzyx.tif"
    type_into(qtbot, form.form.file.line_edit.native, str(out))
    press(qtbot, form.form.call_button.native)
    assert not form.dialog.isVisible()
    status = dock.status.text()
    assert status == (f"labels exported to {out} (ImageJ TIFF, whole T × Z = 8 × 3 volume, "
                      "every 1.5 s, z step 2 µm, pixel 0.5 µm)"), status

    written = _imagej_volume(out)
    np.testing.assert_array_equal(written, labels)
    for t, z in ((3, 0), (5, 2)):  # both clicked slices, as the layer holds them
        assert (written[t, z] > 0).any()
        np.testing.assert_array_equal(written[t, z], labels[t, z])
    back = open_stack(out)
    assert back.axes == "TZYX" and back.shape == (8, 3, 64, 64)
    assert back.scale == pytest.approx((1.5, 2.0, 0.5, 0.5))

    # a saved session is one stack: its labels are the tracked stack's, (T, Y, X) at z = 2
    dock.save_session(tmp_path / "session.json")
    saved = tifffile.imread(tmp_path / "session.labels.tif")
    np.testing.assert_array_equal(saved, labels[:, 2])
    no_alerts.check()


def test_4d_export_tracked_through_z_writes_every_time_point_in_tzyx_order(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells, tmp_path):
    zt = np.transpose(_tzyx(cells), (1, 0, 2, 3))  # (Z, T, Y, X) = (3, 8, 64, 64): z tracked
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, zt, name="ztyx",
                                     axis_labels=("z", "t", "y", "x"), scale=(2.0, 1.5, 0.5, 0.5),
                                     units=("µm", "s", "µm", "µm"))
    assert dock.axis_kind.currentText() == "z", "the layer's axis label says z"
    assert dock.fixed_label.text() == "t (axis 1)"
    viewer.dims.set_current_step(1, 3)  # the time slider: the dock follows
    assert dock.fixed_spin.value() == 3
    r, c = cell_centre(cells, 3)
    click_at(qtbot, dock, (0, 3, r, c))  # an object on z = 0 of t = 3
    viewer.dims.set_current_step(1, 5)
    assert dock.fixed_spin.value() == 5
    r, c = cell_centre(cells, 5)
    click_at(qtbot, dock, (2, 5, 63 - r, c))  # and one on z = 2 of t = 5
    labels = dock.labels_layer.data
    assert (labels[0, 3] > 0).any() and (labels[2, 5] > 0).any(), "the test model must see something"

    # through the form, as OME-Zarr: written T, Z whatever the layer's order
    form = _export_form_showing_the_volume(qtbot, dock, "z")
    choose(form.form.format.native, "OME-Zarr (.zarr)")
    zarr_out = tmp_path / "ztyx.zarr"
    type_into(qtbot, form.form.file.line_edit.native, str(zarr_out), enter=True)
    assert not form.dialog.isVisible()
    assert "whole T × Z = 8 × 3 volume" in dock.status.text(), dock.status.text()
    back = open_stack(zarr_out)
    assert back.axes == "TZYX" and back.shape == (8, 3, 64, 64)
    assert back.scale == pytest.approx((1.5, 2.0, 0.5, 0.5))
    np.testing.assert_array_equal(np.asarray(back.data), np.transpose(labels, (1, 0, 2, 3)))

    # and as ImageJ TIFF, with the statistics of the stack tracked now (t = 5, through z)
    out = dock.export_labels(tmp_path / "ztyx.tif", statistics=True)
    wait_idle(qtbot, dock)
    assert dock.status.text().endswith(f"statistics of the tracked stack (t = 5) to {tmp_path / 'ztyx.csv'} "
                                       "(1 row)"), dock.status.text()
    rows = (tmp_path / "ztyx.csv").read_text().splitlines()
    frame, obj, _, area = rows[1].split(",")[:4]  # the active object, clicked on z = 2 at t = 5
    assert (frame, obj) == ("2", "1") and int(area) == (labels[2, 5] == 1).sum() > 0
    written = _imagej_volume(out)
    for z, t in ((0, 3), (2, 5)):  # both clicked slices, at (t, z) in the file
        assert (written[t, z] > 0).any()
        np.testing.assert_array_equal(written[t, z], labels[z, t])
    np.testing.assert_array_equal(written, np.transpose(labels, (1, 0, 2, 3)))
    no_alerts.check()
