"""The npe2 reader and writer contributions, through npe2's own read/write machinery."""

from __future__ import annotations

import imageio.v2 as iio2
import numpy as np
import pytest
import tifffile

npe2 = pytest.importorskip("npe2")

from napari_sam2._npe2_io import get_video_reader, stack_layer_data  # noqa: E402
from napari_sam2.io.readers import open_stack  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def _discovered():
    """napari discovers plugins at start-up; do the same for npe2's read and write."""
    npe2.PluginManager.instance().discover()


@pytest.fixture
def movie(tmp_path):
    yy, xx = np.mgrid[:32, :48]
    frames = np.stack([((np.sin(xx / 4 + t) + 1) * 100 + yy).astype(np.uint8)[..., None].repeat(3, -1)
                       for t in range(30)])
    path = tmp_path / "movie.mp4"
    iio2.mimwrite(path, frames, fps=10, codec="libx264", output_params=["-g", "5"], macro_block_size=16)
    return path


def test_manifest_is_valid():
    manifest = npe2.PluginManager.instance().get_manifest("napari-sam2")
    readers = [r for r in manifest.contributions.readers if r.command == "napari-sam2.get_video_reader"]
    assert readers and "*.mp4" in readers[0].filename_patterns
    writers = [w for w in manifest.contributions.writers if w.command == "napari-sam2.write_labels"]
    assert writers
    assert set(writers[0].filename_extensions) == {".tif", ".tiff", ".ome.tif", ".ome.tiff", ".zarr"}


def test_video_reader_gives_a_lazy_rgb_layer(movie):
    assert get_video_reader(str(movie.with_suffix(".tif"))) is None
    layers = npe2.read([str(movie)], stack=False, plugin_name="napari-sam2")
    (data, meta, kind), = layers
    assert kind == "image" and meta["rgb"] is True and meta["name"] == "movie"
    assert data.shape == (30, 32, 48, 3) and data.dtype == np.uint8
    assert data.chunksize[0] == 1  # one frame per chunk: napari decodes only the frames it shows
    assert np.asarray(data[22]).shape == (32, 48, 3)
    assert meta["metadata"]["napari_sam2"]["source_path"] == str(movie)


def test_video_decoding_count_through_dask(movie):
    stack = open_stack(movie)
    (data, _, _), = stack_layer_data(stack)
    np.asarray(data[22])
    assert 1 <= stack.data.decoded <= 5


def test_labels_writer_uses_layer_scale_and_geotiff_metadata(tmp_path):
    labels = np.zeros((3, 16, 20), np.uint16)
    labels[:, 4:9, 5:12] = 7
    geo = [(33550, 12, 3, (20.0, 20.0, 0.0), False),
           (33922, 12, 6, (0.0, 0.0, 0.0, 300000.0, 5000000.0, 0.0), False)]
    meta = {"name": "cells", "scale": (4.0, 0.5, 0.5), "units": ("second", "micrometer", "micrometer"),
            "axis_labels": ("t", "y", "x"), "metadata": {"napari_sam2": {"geotiff_tags": geo}}}
    out = tmp_path / "labels.tif"
    written = npe2.write(str(out), [(labels, meta, "labels")], plugin_name="napari-sam2")
    assert written == [str(out)]
    with tifffile.TiffFile(out) as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"
        assert tif.imagej_metadata["finterval"] == 4.0 and tif.imagej_metadata["unit"] == "\\u00B5m"
        assert tuple(tif.pages[0].tags[33922].value) == geo[1][3]
        np.testing.assert_array_equal(tif.asarray(), labels)
    zarr_out = tmp_path / "labels.zarr"
    npe2.write(str(zarr_out), [(labels[0], {"scale": (0.5, 0.5)}, "labels")], plugin_name="napari-sam2")
    assert open_stack(zarr_out).shape == (1, 16, 20)


def test_labels_writer_with_a_napari_layer_state(tmp_path):
    from napari.layers import Labels

    layer = Labels(np.zeros((3, 8, 8), np.uint16), scale=(2.0, 0.5, 0.5), units=("s", "um", "um"),
                   axis_labels=("t", "y", "x"))
    layer.data[1, 2:4, 2:4] = 3
    out = tmp_path / "layer.tif"
    npe2.write(str(out), [layer.as_layer_data_tuple()], plugin_name="napari-sam2")
    with tifffile.TiffFile(out) as tif:
        assert tif.imagej_metadata["finterval"] == 2.0 and tif.imagej_metadata["tunit"] == "s"
        assert tif.imagej_metadata["unit"] == "\\u00B5m"
        np.testing.assert_allclose(tif.pages[0].get_resolution(), (2.0, 2.0))
        np.testing.assert_array_equal(tif.asarray(), layer.data)


def test_labels_writer_writes_ome_tiff_for_an_ome_tif_name(tmp_path):
    from napari.layers import Labels

    layer = Labels(np.zeros((4, 8, 8), np.uint16), scale=(2.5, 0.8, 0.8), units=("mm", "mm", "mm"),
                   axis_labels=("z", "y", "x"))
    layer.data[2, 2:5, 3:6] = 4
    out = tmp_path / "layer.ome.tif"
    assert npe2.write(str(out), [layer.as_layer_data_tuple()], plugin_name="napari-sam2") == [str(out)]
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and tif.series[0].axes == "ZYX"
        assert 'PhysicalSizeZ="2.5"' in tif.ome_metadata and 'PhysicalSizeX="0.8"' in tif.ome_metadata
        np.testing.assert_array_equal(tif.asarray(), layer.data)


def test_napari_save_dialog_offers_the_sam2_writer_for_labels():
    from napari.layers import Labels
    from napari.plugins import _initialize_plugins
    from napari.plugins._npe2 import file_extensions_string_for_layers

    _initialize_plugins()
    filters, writers = file_extensions_string_for_layers([Labels(np.zeros((2, 4, 4), np.uint16))])
    ours = [i for i, w in enumerate(writers) if w.command == "napari-sam2.write_labels"]
    assert ours, [w.command for w in writers]
    entry = filters.split(";;")[ours[0]]
    assert entry.startswith("SAM 2 labels (ImageJ TIFF, OME-TIFF, OME-Zarr) ("), entry
    assert "*.ome.tif" in entry, entry


@pytest.mark.parametrize("order", ["tz", "zt"])
def test_labels_writer_writes_a_4d_layer_as_t_z_y_x(tmp_path, order):
    """napari's save of a time-lapse of z-stacks: ImageJ's TZYX order, both steps kept."""
    from napari.layers import Labels

    tzyx = np.zeros((3, 2, 8, 8), np.uint16)
    tzyx[1, 0, 2:4, 2:4] = 3
    tzyx[2, 1, 5:7, 1:3] = 9
    if order == "tz":
        data, scale, units = tzyx, (4.0, 2.0, 0.5, 0.5), ("s", "um", "um", "um")
    else:
        data, scale, units = tzyx.transpose(1, 0, 2, 3), (2.0, 4.0, 0.5, 0.5), ("um", "s", "um", "um")
    layer = Labels(data, scale=scale, units=units, axis_labels=(*order, "y", "x"))
    out = tmp_path / "layer.tif"
    npe2.write(str(out), [layer.as_layer_data_tuple()], plugin_name="napari-sam2")
    with tifffile.TiffFile(out) as tif:
        assert tif.series[0].axes == "TZYX"
        meta = tif.imagej_metadata
        assert (meta["finterval"], meta["spacing"], meta["tunit"]) == (4.0, 2.0, "s")
        np.testing.assert_array_equal(tif.asarray(), tzyx)
