"""Per-object statistics: areas, centroids and boxes measured on labels, in pixels and physical units."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from napari_sam2.io.readers import FrameGeometry
from napari_sam2.io.stats import STATS_COLUMNS, ObjectStats


def read_rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_measurements_in_pixels_and_microns(tmp_path):
    labels = np.zeros((20, 30), np.uint16)
    labels[2:6, 10:20] = 1  # 4 x 10 = 40 px, centre (3.5, 14.5)
    labels[10:13, 0:3] = 3  # 9 px
    stats = ObjectStats(FrameGeometry("Z", (2.0, 0.5, 0.25), ("µm", "µm")), names={1: "nucleus"})
    stats.add_frame(7, labels, [3, 1, 2], {1: (0.9, 0.8), 2: (0.1, 0.3)})
    stats.add_frame(2, labels, [1])
    path = stats.write_csv(tmp_path / "s.csv")
    rows = read_rows(path)
    assert tuple(rows[0]) == STATS_COLUMNS
    assert [(r["frame"], r["object_id"]) for r in rows] == [("2", "1"), ("7", "1"), ("7", "2"), ("7", "3")]
    one = rows[1]
    assert one["object_name"] == "nucleus"
    assert int(one["area_px"]) == 40 and float(one["area"]) == pytest.approx(40 * 0.125)
    assert one["area_unit"] == "µm^2"
    assert float(one["centroid_row"]) == pytest.approx(3.5)
    assert float(one["centroid_col"]) == pytest.approx(14.5)
    assert float(one["centroid_y"]) == pytest.approx(3.5 * 0.5)
    assert float(one["centroid_x"]) == pytest.approx(14.5 * 0.25)
    assert [one[k] for k in ("bbox_row0", "bbox_col0", "bbox_row1", "bbox_col1")] == ["2", "10", "6", "20"]
    assert float(one["presence"]) == pytest.approx(0.9) and float(one["iou"]) == pytest.approx(0.8)
    absent = rows[2]  # tracked but not in the labels: area 0, no centroid
    assert absent["area_px"] == "0" and absent["centroid_row"] == "" and absent["bbox_row0"] == ""
    assert float(absent["presence"]) == pytest.approx(0.1)
    assert rows[3]["presence"] == "" and rows[3]["area_px"] == "9"  # no score given
    assert rows[0]["presence"] == ""


def test_32_bit_ids_are_measured_like_small_ones(tmp_path):
    """Ids near 2**32 (a uint32 label image) need no bin per possible value."""
    small = np.zeros((20, 30), np.uint32)
    small[2:6, 10:20], small[10:13, 0:3] = 1, 2
    big = np.zeros_like(small)
    big[small == 1], big[small == 2] = 3_000_000_000, 2**32 - 1  # the same order
    big[0, 0] = 7  # an id not measured: background
    rows = {}
    for name, labels, ids in (("small", small, [1, 2]), ("big", big, [2**32 - 1, 3_000_000_000])):
        stats = ObjectStats()
        stats.add_frame(0, labels, ids)
        rows[name] = read_rows(stats.write_csv(tmp_path / f"{name}.csv"))
    keys = [k for k in STATS_COLUMNS if k != "object_id"]
    assert [[r[k] for k in keys] for r in rows["big"]] == [[r[k] for k in keys] for r in rows["small"]]
    assert [r["object_id"] for r in rows["big"]] == ["3000000000", "4294967295"]
    assert [r["area_px"] for r in rows["big"]] == ["40", "9"]


def test_geotiff_centroids_are_map_coordinates(tmp_path):
    labels = np.zeros((10, 10), np.uint8)
    labels[4, 6] = 1
    geometry = FrameGeometry("T", (1.0, -30.0, 30.0), (None, "m"), origin=(3751305.0, 440735.0))
    stats = ObjectStats(geometry)
    stats.add_frame(0, labels, [1])
    row = read_rows(stats.write_csv(tmp_path / "g.csv"))[0]
    assert float(row["area"]) == pytest.approx(900.0) and row["area_unit"] == "m^2"
    assert float(row["centroid_y"]) == pytest.approx(3751305.0 - 4 * 30.0)
    assert float(row["centroid_x"]) == pytest.approx(440735.0 + 6 * 30.0)


def test_uncalibrated_area_unit(tmp_path):
    stats = ObjectStats()
    stats.add_frame(0, np.ones((3, 3), np.uint16), [1])
    row = read_rows(stats.write_csv(tmp_path / "u.csv"))[0]
    assert row["area_unit"] == "px^2" and float(row["area"]) == 9.0


def test_a_stack_gets_rows_where_objects_are_or_were_tracked(tmp_path):
    from napari_sam2.io.stats import measure_stack

    labels = np.zeros((3, 10, 10), np.uint16)
    labels[0, :2, :2] = 5
    labels[2, 4:6, 4:6] = 9
    nan = np.full((3, 2), np.nan)
    quality = {5: np.array([[0.9, 0.8], [0.2, 0.3], [np.nan, np.nan]]), 9: nan}
    stats = measure_stack(labels, [5, 9], names={9: "b"}, quality=quality)
    got = [(r["frame"], r["object_id"], r["area_px"], r["presence"]) for r in stats.rows]
    # 5 on frame 0 (pixels, score), frame 1 (tracked there, lost); 9 on frame 2 (pixels, no score)
    assert [g[:3] for g in got] == [(0, 5, 4), (1, 5, 0), (2, 9, 4)]
    assert got[1][3] == pytest.approx(0.2) and np.isnan(got[2][3])
    one = measure_stack(labels[2], [9])  # a single image: frame 0
    assert [(r["frame"], r["area_px"]) for r in one.rows] == [(0, 4)]
