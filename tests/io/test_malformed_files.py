"""Files the readers cannot read faithfully are refused (or fixed) with one line naming the file."""

from __future__ import annotations

import json
import re

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr
from PIL import Image

from napari_sam2.cli import main
from napari_sam2.errors import ImageReadError
from napari_sam2.io.readers import open_stack, video_frames


def stack16(n=6):
    return np.random.default_rng(0).integers(0, 4000, (n, 40, 50), dtype=np.uint16)


def truncate(path, fraction=1 / 3):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def test_mixed_bit_depths_in_a_folder_are_promoted_not_cut(tmp_path):
    (tmp_path / "f").mkdir()
    img16 = np.full((20, 30), 3264, np.uint16)
    Image.fromarray(np.full((20, 30), 200, np.uint8)).save(tmp_path / "f" / "a1.png")
    Image.fromarray(img16).save(tmp_path / "f" / "a2.png")
    stack = open_stack(tmp_path / "f")
    assert stack.dtype == np.uint16
    assert int(np.asarray(stack.data[1]).max()) == 3264  # was 240 when cast to the first file's uint8
    assert int(np.asarray(stack.data[0]).max()) == 200
    assert "mixes image types uint8 ('a1.png'), uint16 ('a2.png')" in stack.metadata["notes"][0]


def test_gray_and_rgb_in_one_folder_are_refused_at_open(tmp_path):
    (tmp_path / "f").mkdir()
    iio.imwrite(tmp_path / "f" / "a.png", np.zeros((20, 30), np.uint8))
    iio.imwrite(tmp_path / "f" / "b.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.raises(ImageReadError, match=r"'b\.png' is a 3-channel image but 'a\.png' is gray"):
        open_stack(tmp_path / "f")


@pytest.mark.parametrize("kind", ["imagej", "plain", "zlib"])
def test_truncated_tiff_is_refused_naming_file_and_frame(tmp_path, kind):
    path = tmp_path / f"{kind}.tif"
    kwargs = {"imagej": {"imagej": True, "metadata": {"axes": "TYX"}}, "plain": {},
              "zlib": {"compression": "zlib"}}[kind]
    tifffile.imwrite(path, stack16(), **kwargs)
    truncate(path)
    with pytest.raises(ImageReadError,
                       match=rf"'.*{kind}\.tif' is truncated: .*image \d+ .*copy or download it again"):
        open_stack(path)


def test_imagej_stack_without_axes_is_read_as_slices_with_a_note(tmp_path):
    for n in (4, 6):
        path = tmp_path / f"s{n}.tif"
        tifffile.imwrite(path, stack16(n), imagej=True)  # what many scripts write
        stack = open_stack(path)
        frames, geometry = video_frames(stack)
        assert frames.shape == (n, 40, 50) and geometry.axis_name == "Z"
        np.testing.assert_array_equal(frames[n - 1], stack16(n)[n - 1])
        assert f"read as {n} slices" in stack.metadata["notes"][0]
    # real ImageJ channels (a composite) stay channels
    path = tmp_path / "composite.tif"
    tifffile.imwrite(path, stack16(3), imagej=True, metadata={"axes": "CYX", "mode": "composite"})
    assert open_stack(path).axes == "CYX"


def test_truncated_gif_and_png_name_the_file(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (6, 40, 50, 3), dtype=np.uint8)
    iio.imwrite(tmp_path / "a.gif", rgb, duration=200, loop=0)
    truncate(tmp_path / "a.gif", 0.5)
    stack = open_stack(tmp_path / "a.gif")
    with pytest.raises(ImageReadError,
                       match=r"cannot decode frame \d+ of '.*a\.gif': image file is truncated"):
        for i in range(stack.shape[0]):
            stack.data[i]
    (tmp_path / "f").mkdir()
    iio.imwrite(tmp_path / "f" / "a.png", rgb[0, ..., 0])
    iio.imwrite(tmp_path / "f" / "b.png", rgb[1, ..., 0])
    truncate(tmp_path / "f" / "b.png", 0.5)
    stack = open_stack(tmp_path / "f")
    with pytest.raises(ImageReadError, match=r"cannot read '.*b\.png': image file is truncated"):
        stack.data[1]


def _ome_zarr(path, datasets, arrays=("0",)):
    g = zarr.open_group(str(path), mode="w", zarr_format=2)
    for name in arrays:
        g.create_array(name, shape=(3, 8, 8), dtype=np.uint8)
    g.attrs["multiscales"] = [{"version": "0.4", "axes": ["t", "y", "x"], **datasets}]
    return path


def make_malformed(tmp_path):
    files = {}
    tifffile.imwrite(tmp_path / "ok.tif", stack16())
    (tmp_path / "tiny.tif").write_bytes((tmp_path / "ok.tif").read_bytes()[:8])
    files["8-byte TIFF"] = (tmp_path / "tiny.tif",
                            r"cannot read '.*tiny\.tif' as TIFF: it holds no readable image")
    tifffile.imwrite(tmp_path / "cut.tif", stack16(), imagej=True, metadata={"axes": "TYX"})
    files["truncated TIFF"] = (truncate(tmp_path / "cut.tif"), r"'.*cut\.tif' is truncated")
    files["no datasets"] = (_ome_zarr(tmp_path / "nods.zarr", {}), r"lists no dataset: give the array's path")
    files["empty datasets"] = (_ome_zarr(tmp_path / "empty.zarr", {"datasets": []}), r"lists no dataset")
    gone = _ome_zarr(tmp_path / "gone.zarr", {"datasets": [{"path": "0"}]}, arrays=("1",))
    files["missing dataset"] = (gone, r"names the dataset '0', which does not exist")
    (tmp_path / "junk.tif").write_bytes(b"not a tiff at all, just text")
    files["junk TIFF"] = (tmp_path / "junk.tif", r"cannot read '.*junk\.tif' as TIFF")
    return files


CASES = ["8-byte TIFF", "truncated TIFF", "no datasets", "empty datasets", "missing dataset", "junk TIFF"]


@pytest.mark.parametrize("case", CASES)
def test_malformed_files_are_one_line_errors(tmp_path, capsys, case):
    path, message = make_malformed(tmp_path)[case]
    with pytest.raises(ImageReadError, match=message):
        open_stack(path)
    session = tmp_path / "s.json"
    session.write_text(json.dumps({"format": "napari-sam2-session", "version": 1, "objects": [
        {"id": 1, "prompts": [{"frame": 0, "points": [[5, 5]], "labels": [1]}]}]}))
    code = main(["segment", str(path), "--prompts", str(session), "--out", str(tmp_path / "l.tif"),
                 "--model", "sam2.1-tiny"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("napari-sam2: error:")]
    assert len(errors) == 1 and re.search(message, errors[0]), err
    assert not (tmp_path / "l.tif").exists()


def test_the_cli_prints_the_reader_note(tmp_path, capsys):
    tifffile.imwrite(tmp_path / "s.tif", stack16(4), imagej=True)
    session = tmp_path / "s.json"
    session.write_text(json.dumps({"format": "napari-sam2-session", "version": 1, "objects": [
        {"id": 1, "prompts": [{"frame": 9, "points": [[5, 5]], "labels": [1]}]}]}))
    code = main(["segment", str(tmp_path / "s.tif"), "--prompts", str(session), "--out",
                 str(tmp_path / "l.tif"), "--model", "sam2.1-tiny"])
    err = capsys.readouterr().err
    assert code == 2  # frame 9 of a 4-slice stack: the slices are frames now
    assert "napari-sam2: note: 's.tif' is an ImageJ stack of 4 images" in err
    assert "the input has 4 frames" in err
