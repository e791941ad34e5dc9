"""Readers: real files of every supported kind, voxel sizes, GeoTIFF tags, lazy video decoding."""

from __future__ import annotations

import av
import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from napari_sam2.errors import ImageReadError
from napari_sam2.io.readers import (
    GifFrames,
    VideoFrames,
    open_stack,
    video_frames,
)

GEO_TAGS = [
    (33550, "d", 3, (30.0, 30.0, 0.0), False),  # ModelPixelScale: 30 m pixels
    (33922, "d", 6, (0.0, 0.0, 0.0, 440720.0, 3751320.0, 0.0), False),  # ModelTiepoint
    (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32611), False),
]


def moving_pattern(n=40, shape=(48, 64)):
    """A smooth moving pattern: compresses well and every frame differs."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.stack([
        ((np.sin(xx / 5 + t / 3) + np.cos(yy / 7 - t / 5)) * 60 + 128)
        .astype(np.uint8)[..., None].repeat(3, -1)
        for t in range(n)
    ])


def decode_all(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


# --------------------------------------------------------------------------- TIFF
def test_imagej_tiff_is_lazy_with_voxel_size(tmp_path):
    data = np.random.default_rng(0).integers(0, 4096, (6, 32, 40), dtype=np.uint16)
    path = tmp_path / "t.tif"
    tifffile.imwrite(path, data, imagej=True, resolution=(1 / 0.25, 1 / 0.5),
                     metadata={"axes": "TYX", "unit": "\\u00B5m", "finterval": 30.0})
    stack = open_stack(path)
    assert stack.axes == "TYX" and stack.shape == (6, 32, 40) and stack.dtype == np.uint16
    assert not isinstance(stack.data, np.ndarray)  # pages are read on demand
    assert stack.scale == pytest.approx((30.0, 0.5, 0.25))
    assert stack.units[1:] == ("µm", "µm")
    frames, geometry = video_frames(stack)
    assert frames.shape == (6, 32, 40)
    np.testing.assert_array_equal(frames[4], data[4])
    assert geometry.axis_name == "T" and geometry.scale == pytest.approx((30.0, 0.5, 0.25))
    assert geometry.pixel_area == pytest.approx(0.125)


def test_ome_tiff_physical_size(tmp_path):
    data = np.zeros((5, 16, 16), np.uint16)
    path = tmp_path / "v.ome.tif"
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "ZYX", "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.3, "PhysicalSizeZ": 1.5,
        "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm", "PhysicalSizeZUnit": "µm"})
    stack = open_stack(path)
    assert stack.name == "v"
    assert stack.axes == "ZYX"
    assert stack.scale == pytest.approx((1.5, 0.3, 0.2))
    _, geometry = video_frames(stack)
    assert geometry.axis_name == "Z" and geometry.units == ("µm", "µm")


def test_pyramidal_tiff_reads_its_full_resolution_level(tmp_path):
    image = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    path = tmp_path / "pyramid.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, subifds=1)
        tif.write(image[::2, ::2], subfiletype=1)
    with tifffile.TiffFile(path) as tif:
        assert len(tif.series[0].levels) == 2
    opened = open_stack(path)
    assert opened.shape == (64, 48)
    np.testing.assert_array_equal(np.asarray(opened.data[10:20]), image[10:20])
    opened.close()


def test_hyperstack_axes_and_axis_choice(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(0, 255, (3, 4, 2, 16, 20), dtype=np.uint8)  # T Z C Y X
    path = tmp_path / "h.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX", "spacing": 2.0})
    stack = open_stack(path)
    assert stack.axes == "TZCYX"
    with pytest.raises(ImageReadError, match=r"axis 1 \(Z, length 4\) is not the video axis"):
        video_frames(stack)
    with pytest.raises(ImageReadError, match="is the Y axis"):
        video_frames(stack, axis=3)
    with pytest.raises(ImageReadError, match="does not exist"):
        video_frames(stack, axis=7)
    # one time point: z becomes the video axis, channels go last
    single = tmp_path / "z.tif"
    tifffile.imwrite(single, data[:1], imagej=True, metadata={"axes": "TZCYX", "spacing": 2.0})
    frames, geometry = video_frames(open_stack(single))
    assert frames.shape == (4, 16, 20, 2)
    np.testing.assert_array_equal(frames[3], np.moveaxis(data[0, 3], 0, -1))
    assert geometry.axis_name == "Z"
    # tifffile's default for a plain 3-D ImageJ stack is "channels" in grayscale mode: read as
    # slices, with a note (4 slices are not one RGBA frame); --axis 0 gives the same frames
    plain = tmp_path / "plain.tif"
    tifffile.imwrite(plain, data[0, :, 0], imagej=True)
    stack = open_stack(plain)
    assert stack.axes == "ZYX"
    assert "read as 4 slices" in stack.metadata["notes"][0]
    assert video_frames(stack)[0].shape == (4, 16, 20)
    frames, _ = video_frames(stack, axis=0)
    assert frames.shape == (4, 16, 20)
    np.testing.assert_array_equal(frames[2], data[0, 2, 0])


def test_geotiff_tags_scale_and_origin(tmp_path):
    data = np.arange(3 * 10 * 12, dtype=np.uint16).reshape(3, 10, 12)
    path = tmp_path / "scene.tif"
    tifffile.imwrite(path, data, extratags=GEO_TAGS, photometric="minisblack")
    stack = open_stack(path)
    assert [t[0] for t in stack.geotiff_tags] == [33550, 33922, 34735]
    assert stack.geotiff_tags[1][3] == GEO_TAGS[1][3]
    assert stack.scale[1:] == (-30.0, 30.0) and stack.units[1:] == ("m", "m")
    # centre of pixel (0, 0) of a PixelIsArea raster: half a pixel from the tie point
    assert stack.origin == pytest.approx((3751320.0 - 15.0, 440720.0 + 15.0))
    frames, geometry = video_frames(stack)
    assert frames.shape == (3, 10, 12) and geometry.geotiff_tags == stack.geotiff_tags


# --------------------------------------------------------------------------- video
def test_mp4_random_access_decodes_only_what_is_needed(tmp_path):
    frames = moving_pattern(40)
    path = tmp_path / "movie.mp4"
    iio2.mimwrite(path, frames, fps=10, codec="libx264", output_params=["-g", "5"], macro_block_size=16)
    reference = decode_all(path)
    video = VideoFrames(path)
    assert video.shape == (40, 48, 64, 3) and video.dtype == np.uint8
    assert video.decoded == 0  # opening only reads packets
    np.testing.assert_array_equal(video[33], reference[33])
    assert video.decoded <= 5  # from the keyframe at 30, not from frame 0
    # random order and backwards give exactly the frames of a plain sequential decode
    for i in np.random.default_rng(0).permutation(40):
        np.testing.assert_array_equal(video[int(i)], reference[i])
    video = VideoFrames(path)
    for i in range(39, -1, -1):
        np.testing.assert_array_equal(video[i], reference[i])
    assert video.decoded == 40  # each group of pictures decoded once thanks to the cache
    video.close()


@pytest.mark.parametrize("suffix, codec", [(".avi", "mpeg4"), (".mov", "mpeg4")])
def test_avi_and_mov(tmp_path, suffix, codec):
    path = tmp_path / f"clip{suffix}"
    iio.imwrite(path, moving_pattern(8), plugin="pyav", codec=codec, fps=5)
    stack = open_stack(path)
    assert stack.axes == "TYXC" and stack.shape == (8, 48, 64, 3)
    np.testing.assert_array_equal(stack.data[5], decode_all(path)[5])


def test_gif_frames(tmp_path):
    frames = moving_pattern(6)
    path = tmp_path / "anim.gif"
    iio.imwrite(path, frames, duration=100, loop=0)
    gif = open_stack(path).data
    assert isinstance(gif, GifFrames) and gif.shape == (6, 48, 64, 3)
    expected = iio.imread(path, index=None)[..., :3]
    np.testing.assert_array_equal(gif[4], expected[4])
    np.testing.assert_array_equal(gif[1], expected[1])  # seeking backwards
    assert gif.decoded == 2


# --------------------------------------------------------------------------- folders, zarr, npy
def test_png_folder_in_natural_order(tmp_path):
    data = np.random.default_rng(2).integers(0, 255, (11, 20, 24), dtype=np.uint8)
    for i, frame in enumerate(data):
        iio.imwrite(tmp_path / f"img{i}.png", frame)
    (tmp_path / "notes.txt").write_text("not an image")
    stack = open_stack(tmp_path)
    assert stack.axes == "TYX" and stack.shape == (11, 20, 24)
    assert stack.metadata["files"][:3] == ["img0.png", "img1.png", "img2.png"]
    assert stack.data.decoded == 1  # only the first image, for its dtype
    np.testing.assert_array_equal(stack.data[10], data[10])
    assert stack.data.decoded == 2


def test_folder_with_an_odd_image_names_it(tmp_path):
    iio.imwrite(tmp_path / "a1.png", np.zeros((20, 24), np.uint8))
    iio.imwrite(tmp_path / "a2.png", np.zeros((21, 24), np.uint8))
    with pytest.raises(ImageReadError, match="'a2.png' is 21x24 pixels"):
        open_stack(tmp_path)


def test_empty_folder(tmp_path):
    with pytest.raises(ImageReadError, match="holds no image file"):
        open_stack(tmp_path)


def test_zarr_array_and_group(tmp_path):
    import zarr

    data = np.random.default_rng(3).random((4, 8, 9)).astype(np.float32)
    arr = zarr.open_array(str(tmp_path / "a.zarr"), mode="w", shape=data.shape, chunks=(1, 8, 9), dtype="f4")
    arr[:] = data
    stack = open_stack(tmp_path / "a.zarr")
    assert stack.axes == "TYX"
    np.testing.assert_array_equal(stack.data[2], data[2])
    group = zarr.open_group(str(tmp_path / "g.zarr"), mode="w")
    group.create_array("x", shape=(2, 4, 4), dtype="u1")
    group.create_array("y", shape=(2, 4, 4), dtype="u1")
    with pytest.raises(ImageReadError, match=r"arrays \[x, y\]: give the array's path"):
        open_stack(tmp_path / "g.zarr")
    assert open_stack(tmp_path / "g.zarr" / "y").shape == (2, 4, 4)


def test_npy_is_memory_mapped(tmp_path):
    data = np.arange(2 * 5 * 6 * 3, dtype=np.uint8).reshape(2, 5, 6, 3)
    np.save(tmp_path / "rgb.npy", data)
    stack = open_stack(tmp_path / "rgb.npy")
    assert isinstance(stack.data, np.memmap)
    assert stack.axes == "TYXC"
    frames, _ = video_frames(stack)
    np.testing.assert_array_equal(frames[1], data[1])


def test_single_png_is_one_frame(tmp_path):
    image = np.random.default_rng(4).integers(0, 255, (10, 12, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "one.png", image)
    frames, _ = video_frames(open_stack(tmp_path / "one.png"))
    assert frames.shape == (1, 10, 12, 3)
    np.testing.assert_array_equal(frames[0], image)


def test_missing_and_unknown_inputs(tmp_path):
    with pytest.raises(ImageReadError, match="does not exist"):
        open_stack(tmp_path / "nope.tif")
    (tmp_path / "data.xyz").write_bytes(b"12345")
    with pytest.raises(ImageReadError, match="unknown input format '.xyz'"):
        open_stack(tmp_path / "data.xyz")
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(ImageReadError, match="cannot read .* as TIFF"):
        open_stack(tmp_path / "bad.tif")


def test_lazy_frames_indexing_matches_numpy(tmp_path):
    data = np.random.default_rng(5).integers(0, 255, (5, 6, 7), dtype=np.uint8)
    for i, frame in enumerate(data):
        iio.imwrite(tmp_path / f"f{i:02d}.png", frame)
    lazy = open_stack(tmp_path).data
    for key in (2, -1, slice(1, 4), slice(None, None, 2), [4, 0], (3, slice(1, 3)),
                (Ellipsis, 2), (slice(0, 2), Ellipsis, 1), slice(3, 3), Ellipsis):
        np.testing.assert_array_equal(lazy[key], data[key], err_msg=repr(key))
    np.testing.assert_array_equal(np.asarray(lazy), data)
    with pytest.raises(IndexError):
        lazy[5]


@pytest.mark.parametrize("planes", [3, 4])
def test_a_small_stack_tifffile_stored_as_colour_planes_opens_whole(tmp_path, planes):
    """tifffile stores a (3 or 4, Y, X) array as one RGB(A) image with separate planes.

    The file is complete: it was refused as "truncated" (its shape metadata counts 3-4 images
    where tifffile reads one). It opens as that many channels, with a note on how to store
    frames instead.
    """
    import warnings

    import tifffile

    stack = np.arange(planes * 20 * 30, dtype=np.uint16).reshape(planes, 20, 30)
    path = tmp_path / "small.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # tifffile: "future versions will store..."
        tifffile.imwrite(path, stack)
    opened = open_stack(path)
    assert opened.axes == "CYX" and opened.shape == (planes, 20, 30)
    np.testing.assert_array_equal(np.asarray(opened.data[:]), stack)
    assert any(f"read as {planes} channels" in note and "photometric='minisblack'" in note
               for note in opened.metadata["notes"])
    opened.close()
