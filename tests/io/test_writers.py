"""Label writers: ImageJ TIFF, OME-TIFF for 32-bit ids, GeoTIFF tags, OME-Zarr, partial files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import zarr

from napari_sam2.errors import LabelWriteError
from napari_sam2.io import writers
from napari_sam2.io.readers import FrameGeometry, open_stack
from napari_sam2.io.writers import LabelsWriter, label_dtype, labels_format, write_labels

GEO_TAGS = [
    (33550, 12, 3, (10.0, 10.0, 0.0), False),
    (33922, 12, 6, (0.0, 0.0, 0.0, 500000.0, 4200000.0, 0.0), False),
    (34735, 3, 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32633), False),
    (34737, 2, 23, "WGS 84 / UTM zone 33N|", False),
]


def blobs(shape=(4, 20, 30), ids=(1, 2)):
    labels = np.zeros(shape, np.uint32 if max(ids) > 65535 else np.uint16)
    for t in range(shape[0]):
        for k, i in enumerate(ids):
            labels[t, 2 + 3 * k: 8 + 3 * k, 2 + t + 6 * k: 9 + t + 6 * k] = i
    return labels


def test_label_dtype_and_format():
    assert label_dtype(3) == np.uint16 and label_dtype(65535) == np.uint16
    assert label_dtype(65536) == np.uint32
    with pytest.raises(LabelWriteError, match="does not fit in 32 bits"):
        label_dtype(2**32)
    assert labels_format("a.TIF") == "tiff" and labels_format("b.ome.zarr/") == "zarr"
    with pytest.raises(LabelWriteError, match="unknown output format"):
        labels_format("labels.png")


def test_imagej_hyperstack_keeps_voxel_size(tmp_path):
    labels = blobs()
    geometry = FrameGeometry("Z", (2.0, 0.5, 0.25), ("µm", "µm"))
    path = write_labels(tmp_path / "l.tif", labels, geometry)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_imagej
        assert tif.series[0].axes == "ZYX" and tif.series[0].dtype == np.uint16
        assert tif.pages[0].compression == tifffile.COMPRESSION.ADOBE_DEFLATE
        ij = tif.imagej_metadata
        assert ij["slices"] == 4 and ij["spacing"] == 2.0 and ij["unit"] == "\\u00B5m"
        np.testing.assert_allclose(tif.pages[0].get_resolution(), (4.0, 2.0))  # pixels per µm, (x, y)
        np.testing.assert_array_equal(tif.asarray(), labels)
    back = open_stack(path)  # and our reader gets the same geometry back
    assert back.scale == pytest.approx((2.0, 0.5, 0.25)) and back.units == ("µm",) * 3


def test_time_series_frame_interval(tmp_path):
    geometry = FrameGeometry("T", (5.0, 1.0, 1.0), ("min", "mm"))
    path = write_labels(tmp_path / "l.tiff", blobs(), geometry)
    with tifffile.TiffFile(path) as tif:
        assert tif.series[0].axes == "TYX"
        assert tif.imagej_metadata["finterval"] == 5.0 and tif.imagej_metadata["tunit"] == "min"


def test_large_ids_give_ome_tiff_uint32(tmp_path):
    labels = blobs(ids=(1, 70000))
    geometry = FrameGeometry("Z", (3.0, 0.5, 0.5), ("µm", "µm"))
    path = write_labels(tmp_path / "big.tif", labels, geometry)
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and not tif.is_imagej
        assert tif.series[0].dtype == np.uint32
        np.testing.assert_array_equal(tif.asarray(), labels)
    assert open_stack(path).scale == pytest.approx((3.0, 0.5, 0.5))


def test_an_ome_tif_name_asks_for_ome_tiff_with_physical_sizes(tmp_path):
    import re

    labels = blobs()
    path = write_labels(tmp_path / "l.ome.tif", labels, FrameGeometry("Z", (2.5, 0.8, 0.8), ("mm", "mm")))
    with tifffile.TiffFile(path) as tif:
        assert tif.is_ome and not tif.is_imagej
        assert tif.series[0].axes == "ZYX" and tif.series[0].dtype == np.uint16
        np.testing.assert_array_equal(tif.asarray(), labels)
        pixels = re.search(r"<Pixels [^>]*>", tif.ome_metadata).group(0)
    expected = ('PhysicalSizeZ="2.5"', 'PhysicalSizeZUnit="mm"', 'PhysicalSizeX="0.8"', 'PhysicalSizeY="0.8"')
    for attr in expected:
        assert attr in pixels, pixels
    assert open_stack(path).scale == pytest.approx((2.5, 0.8, 0.8))
    series = write_labels(tmp_path / "t.ome.tiff", labels, FrameGeometry("T", (30.0, 0.5, 0.5), ("s", "µm")))
    with tifffile.TiffFile(series) as tif:
        assert tif.series[0].axes == "TYX"
        assert 'TimeIncrement="30.0"' in tif.ome_metadata and 'TimeIncrementUnit="s"' in tif.ome_metadata


def test_geotiff_tags_on_every_page(tmp_path):
    geometry = FrameGeometry("T", (1.0, -10.0, 10.0), (None, "m"), geotiff_tags=GEO_TAGS)
    path = write_labels(tmp_path / "geo.tif", blobs(), geometry)
    with tifffile.TiffFile(path) as tif:
        tif.pages.useframes = False  # full pages with their tags, not light frames
        assert len(tif.pages) == 4
        for i in range(4):
            for code, _, _, value, _ in GEO_TAGS:
                got = tif.pages[i].tags[code].value
                assert (tuple(got) if not isinstance(got, str) else got) == value
        assert tif.geotiff_metadata["ProjectedCSTypeGeoKey"] == 32633


def test_writer_takes_frames_in_any_order_and_leaves_a_valid_partial_file(tmp_path):
    labels = blobs(shape=(5, 20, 30))
    with LabelsWriter(tmp_path / "p.tif", labels.shape, 2) as writer:
        writer.write_frame(3, labels[3])
        writer.write_frame(1, labels[1])
        np.testing.assert_array_equal(writer.read_frame(3), labels[3])
        assert writer.read_frame(0).max() == 0
        assert writer.n_written == 2
    out = tifffile.imread(tmp_path / "p.tif")
    assert out.shape == (5, 20, 30)
    np.testing.assert_array_equal(out[[1, 3]], labels[[1, 3]])
    assert out[[0, 2, 4]].max() == 0


def test_large_tiff_buffers_in_a_temporary_file(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "_MEMORY_BUFFER_BYTES", 0)
    labels = blobs()
    writer = LabelsWriter(tmp_path / "m.tif", labels.shape, 2)
    assert isinstance(writer._array, np.memmap)
    for t in range(4):
        writer.write_frame(t, labels[t])
    assert len(list(tmp_path.glob(".m.tif.*.buffer"))) == 1
    writer.close()
    assert list(tmp_path.iterdir()) == [tmp_path / "m.tif"]  # buffer and temporary file removed
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "m.tif"), labels)


def test_zarr_is_written_frame_by_frame_as_ome_ngff(tmp_path):
    labels = blobs()
    geometry = FrameGeometry("T", (60.0, 0.5, 0.5), ("s", "µm"))
    path = tmp_path / "l.ome.zarr"
    writer = LabelsWriter(path, labels.shape, 2, geometry)
    writer.write_frame(2, labels[2])
    # already on disk before close, under a temporary name beside the output
    assert writer.temp_path.parent == tmp_path and writer.temp_path.name.startswith(".l.ome.zarr.")
    on_disk = zarr.open_group(str(writer.temp_path), mode="r")["0"]
    np.testing.assert_array_equal(on_disk[2], labels[2])
    assert on_disk[1].max() == 0 and on_disk.chunks == (1, 20, 30)
    assert not path.exists()  # the output appears only complete
    writer.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["l.ome.zarr"]
    group = zarr.open_group(str(path), mode="r")
    ms = group.attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["t", "y", "x"]
    assert ms["axes"][0]["unit"] == "second" and ms["axes"][1]["unit"] == "micrometer"
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [60.0, 0.5, 0.5]
    assert "image-label" in group.attrs
    back = open_stack(path)
    assert back.axes == "TYX" and back.scale == (60.0, 0.5, 0.5)


def test_write_labels_inputs(tmp_path):
    import dask.array as da

    labels = blobs()
    write_labels(tmp_path / "d.tif", da.from_array(labels, chunks=(1, 20, 30)))
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "d.tif"), labels)
    write_labels(tmp_path / "2d.tif", labels[0])
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "2d.tif"), labels[0])
    big = labels.astype(np.int64) * 40000
    write_labels(tmp_path / "i64.tif", big)
    assert tifffile.imread(tmp_path / "i64.tif").dtype == np.uint32
    with pytest.raises(LabelWriteError, match="labels must be >= 0"):
        write_labels(tmp_path / "neg.tif", -labels.astype(np.int32))
    with pytest.raises(LabelWriteError, match="labels must be integers"):
        write_labels(tmp_path / "f.tif", labels.astype(np.float32))
    with pytest.raises(LabelWriteError, match="does not exist"):
        write_labels(tmp_path / "missing" / "x.tif", labels)


def _volumes():
    """A (T, Z, Y, X) label time-lapse of z-stacks, a different object on each (t, z)."""
    labels = np.zeros((3, 4, 20, 30), np.uint16)
    for t in range(3):
        for z in range(4):
            labels[t, z, 2 + t:8 + t, 3 + z:9 + z] = 1 + t * 4 + z
    return labels


@pytest.mark.parametrize("name", ["v.tif", "v.ome.tif", "v.zarr"])
def test_time_lapse_of_z_stacks_keeps_both_axes(tmp_path, name):
    """4-D labels are written T, Z, Y, X with the frame interval and the z step."""
    labels = _volumes()
    geometry = FrameGeometry(axis_name="T", scale=(2.5, 0.8, 0.8), units=("s", "µm"), z_step=1.5)
    out = write_labels(tmp_path / name, labels, geometry)
    back = open_stack(out)
    assert back.axes == "TZYX" and back.shape == labels.shape
    assert back.scale == (2.5, 1.5, 0.8, 0.8)
    np.testing.assert_array_equal(np.asarray(back.data), labels)
    if name == "v.tif":
        with tifffile.TiffFile(out) as tif:
            meta = tif.imagej_metadata
            assert tif.is_imagej and (meta["frames"], meta["slices"]) == (3, 4)
            assert (meta["finterval"], meta["spacing"], meta["tunit"]) == (2.5, 1.5, "s")
            # page order is ImageJ's: z runs fastest
            np.testing.assert_array_equal(tif.pages[5].asarray(), labels[1, 1])
    elif name == "v.zarr":
        ms = zarr.open_group(str(out)).attrs["multiscales"][0]
        assert [a["name"] for a in ms["axes"]] == ["t", "z", "y", "x"]
        assert ms["axes"][1] == {"name": "z", "type": "space", "unit": "micrometer"}
        assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [2.5, 1.5, 0.8, 0.8]


def test_a_5d_label_array_is_refused_with_the_shapes_it_takes(tmp_path):
    with pytest.raises(LabelWriteError, match=r"2-D, 3-D or 4-D \(T, Z, Y, X\) labels, got 5-D"):
        write_labels(tmp_path / "x.tif", np.zeros((2, 2, 2, 4, 4), np.uint16))
