"""Export labels… can also write per-object statistics, as the command line's ``--stats`` does.

A cell biologist tracking nuclei wants areas and centroids over time next to the label file:
one CSV row per object and frame where the object has pixels or SAM 2 tracked it, in pixels and
in the image's units, with SAM 2's scores and the names given in the object list.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from _user_actions import cell_centre, click_at, press, press_key, type_into, viewer_with_model, wait_idle
from qtpy.QtCore import QPoint, Qt

from napari_sam2.samples import make_cells_timelapse


@pytest.fixture
def cells():
    return make_cells_timelapse(n_frames=6, shape=(64, 64), n_cells=3, seed=1)


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_export_with_statistics_writes_a_row_per_object_and_tracked_frame(
        make_napari_viewer, hub_cache, no_alerts, qtbot, cells, tmp_path):
    viewer, dock = viewer_with_model(make_napari_viewer, qtbot, cells.image, scale=(30.0, 0.5, 0.5),
                                     units=("s", "µm", "µm"))
    click_at(qtbot, dock, (0, *cell_centre(cells, 0)))
    press_key(qtbot, viewer, "n")
    lab = cells.labels[2]
    rows, cols = np.nonzero(lab == np.unique(lab[lab > 0])[1])
    click_at(qtbot, dock, (2, float(np.median(rows)), float(np.median(cols))))
    dock.object_list.item(1).setText("nucleus B")  # a name typed in the list
    dock.direction_combo.setCurrentText("forward")
    press(qtbot, dock.propagate_button)
    wait_idle(qtbot, dock)

    press(qtbot, dock.export_button)
    form = dock.export_form.form
    box = form.statistics.native  # tick "statistics (.csv)": a click on its box
    qtbot.mouseClick(box, Qt.MouseButton.LeftButton, pos=QPoint(8, box.height() // 2))
    assert form.statistics.value is True
    type_into(qtbot, form.file.line_edit.native, str(tmp_path / "cells_labels.tif"))
    press(qtbot, form.call_button.native)
    wait_idle(qtbot, dock)
    out = tmp_path / "cells_labels.csv"
    assert f"statistics to {out}" in dock.status.text(), dock.status.text()

    table = _rows(out)
    labels = dock.labels_layer.data
    quality = {i: dock.session.quality(i) for i in (1, 2)}
    seen = set()
    for row in table:
        frame, obj = int(row["frame"]), int(row["object_id"])
        seen.add((frame, obj))
        n = int((labels[frame] == obj).sum())
        assert int(row["area_px"]) == n
        assert float(row["area"]) == pytest.approx(n * 0.25) and row["area_unit"] == "µm^2"
        assert row["object_name"] == {1: "object 1", 2: "nucleus B"}[obj]
        assert float(row["presence"]) == pytest.approx(quality[obj][frame, 0], rel=1e-5)
        if n:
            r, c = np.nonzero(labels[frame] == obj)
            assert float(row["centroid_y"]) == pytest.approx(r.mean() * 0.5, rel=1e-4)
    # object 1 tracked from frame 0, object 2 from frame 2 (forward): a row for each, no more
    assert seen == {(f, 1) for f in range(6)} | {(f, 2) for f in range(2, 6)}, sorted(seen)
    no_alerts.check()
