"""Outputs are complete or absent; a failed write never touches an earlier output or a folder not ours."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import tifffile
import zarr

from napari_sam2.errors import LabelWriteError, OutputPathError
from napari_sam2.io import writers
from napari_sam2.io.atomic import (
    StagedOutput,
    check_output_path,
    check_output_paths,
    is_our_output,
    partial_path,
)
from napari_sam2.io.session_file import (
    SessionFile,
    SessionObject,
    read_session,
    write_session,
)
from napari_sam2.io.stats import ObjectStats
from napari_sam2.io.writers import LabelsWriter, write_labels
from napari_sam2.prompts import Prompt


def labels(n=4, h=12, w=10, value=1):
    out = np.zeros((n, h, w), np.uint16)
    out[:, 2:6, 3:7] = value
    return out


def listing(folder):
    return sorted(p.name for p in folder.iterdir())


def test_partial_names():
    assert partial_path("a/labels.tif").as_posix() == "a/labels.partial.tif"
    assert partial_path("movie.ome.zarr").name == "movie.partial.ome.zarr"
    assert partial_path("x.zarr/").name == "x.partial.zarr"
    assert partial_path("stats.csv").name == "stats.partial.csv"


def test_staged_output_commits_only_when_complete(tmp_path):
    target = tmp_path / "t.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with StagedOutput(target) as out:
            out.temp.write_text("half")
            raise RuntimeError("disk on fire")
    assert target.read_text() == "old" and listing(tmp_path) == ["t.txt"]
    a, b = StagedOutput(target), StagedOutput(target)
    assert a.temp != b.temp  # two writers of one output never share a temporary name
    a.temp.write_text("new")
    a.commit()
    assert target.read_text() == "new" and listing(tmp_path) == ["t.txt"]


def test_existing_output_survives_a_failed_rerun_and_the_partial_is_kept(tmp_path):
    path = tmp_path / "l.tif"
    write_labels(path, labels(value=1))
    before = path.read_bytes()
    with pytest.raises(ValueError, match="NaN frame"):
        with LabelsWriter(path, (4, 12, 10), 3) as w:
            w.write_frame(0, labels(value=3)[0])
            raise ValueError("NaN frame")
    assert path.read_bytes() == before
    part = tifffile.imread(tmp_path / "l.partial.tif")
    assert part[0].max() == 3 and part[1:].max() == 0
    assert listing(tmp_path) == ["l.partial.tif", "l.tif"]


def test_disk_full_while_writing_tiff_keeps_the_earlier_file(tmp_path, monkeypatch):
    path = tmp_path / "l.tif"
    write_labels(path, labels(value=1))
    before = path.read_bytes()
    real = tifffile.imwrite

    def full_disk(file, *args, **kwargs):
        with open(file, "wb") as fh:  # some bytes reach the disk, then it is full
            fh.write(b"II*\x00" + b"\x00" * 100)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", full_disk)
    w = LabelsWriter(path, (4, 12, 10), 2)
    w.write_frame(1, labels(value=2)[1])
    with pytest.raises(OSError, match="No space left"):
        w.close()
    assert path.read_bytes() == before
    assert listing(tmp_path) == ["l.tif"]  # no temporary file left
    w2 = LabelsWriter(path, (4, 12, 10), 2)
    w2.write_frame(1, labels(value=2)[1])
    assert w2.close_partial() is None  # the partial cannot be written either: said, nothing left
    assert listing(tmp_path) == ["l.tif"]
    monkeypatch.setattr(tifffile, "imwrite", real)


def test_disk_full_while_writing_zarr_frames(tmp_path, monkeypatch):
    path = tmp_path / "l.zarr"
    write_labels(path, labels(value=1))
    w = LabelsWriter(path, (4, 12, 10), 2)
    w.write_frame(0, labels(value=2)[0])
    real = type(w._array).__setitem__

    def full(self, key, value):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(type(w._array), "__setitem__", full)
    with pytest.raises(OSError):
        w.write_frame(1, labels(value=2)[1])
    monkeypatch.setattr(type(w._array), "__setitem__", real)
    part = w.close_partial()
    assert part == tmp_path / "l.partial.zarr"
    np.testing.assert_array_equal(zarr.open_group(str(path), mode="r")["0"][:], labels(value=1))
    got = zarr.open_group(str(part), mode="r")["0"][:]
    assert got[0].max() == 2 and got[1:].max() == 0
    assert listing(tmp_path) == ["l.partial.zarr", "l.zarr"]


def test_zarr_folder_not_ours_is_never_replaced(tmp_path):
    theirs = tmp_path / "data.zarr"
    theirs.mkdir()
    (theirs / "precious.txt").write_text("keep me")
    with pytest.raises(LabelWriteError, match="napari-sam2 did not write"):
        write_labels(theirs, labels())
    assert (theirs / "precious.txt").read_text() == "keep me"
    # an OME-Zarr image of someone else (valid zarr, no mark of ours) is not replaced either
    img = tmp_path / "img.ome.zarr"
    g = zarr.open_group(str(img), mode="w", zarr_format=2)
    g.create_array("0", shape=(2, 4, 4), dtype=np.uint8)[:] = 7
    g.attrs["multiscales"] = [{"version": "0.4", "datasets": [{"path": "0"}]}]
    assert not is_our_output(img)
    with pytest.raises(LabelWriteError, match="did not write"):
        write_labels(img, labels())
    assert zarr.open_group(str(img), mode="r")["0"][:].min() == 7
    # ours is replaced, completely
    ours = tmp_path / "ours.zarr"
    write_labels(ours, labels(value=1))
    assert is_our_output(ours)
    write_labels(ours, labels(value=4))
    assert zarr.open_group(str(ours), mode="r")["0"][:].max() == 4
    assert listing(tmp_path) == ["data.zarr", "img.ome.zarr", "ours.zarr"]


def test_file_where_a_folder_is_meant_and_the_reverse(tmp_path):
    (tmp_path / "f.zarr").write_text("a file")
    (tmp_path / "d.tif").mkdir()
    with pytest.raises(OutputPathError, match="is a file, but this output is a folder"):
        check_output_path(tmp_path / "f.zarr", folder=True, option="--out")
    with pytest.raises(OutputPathError, match="is a folder, but this output is a file"):
        check_output_path(tmp_path / "d.tif", option="--out")
    with pytest.raises(OutputPathError, match="does not exist"):
        check_output_path(tmp_path / "no" / "x.tif", option="--out")
    with pytest.raises(OutputPathError, match="cannot write in the folder '/proc'"):
        check_output_path("/proc/napari-sam2-test.csv", option="--stats")


def test_outputs_against_inputs_and_each_other(tmp_path):
    stack = tmp_path / "ome.zarr"
    (stack / "0").mkdir(parents=True)
    ins = [("input", stack / "0"), ("session file", tmp_path / "s.json")]
    cases = [
        ([("--out", stack, "folder")], "contains the input"),
        ([("--out", stack / "0" / "x.zarr", "folder")], "is inside the input"),
        ([("--save-session", tmp_path / "s.json", "file")], "is the session file"),
        ([("--out", tmp_path / "a.tif", "file"), ("--save-session", tmp_path / "a.tif", "file")],
         "each output needs its own name"),
    ]
    (tmp_path / "s.json").write_text("{}")
    for outputs, message in cases:
        with pytest.raises(OutputPathError, match=message):
            check_output_paths(outputs, ins)
    # a hard link to an input is the input
    (tmp_path / "link.json").hardlink_to(tmp_path / "s.json")
    with pytest.raises(OutputPathError, match="is the session file"):
        check_output_paths([("--stats", tmp_path / "link.json", "file")], ins)
    check_output_paths([("--out", tmp_path / "fine.tif", "file"), ("--stats", None, "file")], ins)


def _session(mask_value_rows):
    objects = []
    for k, rows in enumerate(mask_value_rows):
        mask = np.zeros((8, 8), bool)
        mask[rows] = True
        objects.append(SessionObject(k + 1, f"o{k + 1}", [Prompt(frame=0, kind="mask", mask=mask)]))
    return SessionFile(objects=objects)


def test_session_and_masks_are_one_unit(tmp_path, monkeypatch):
    path = tmp_path / "s.json"
    write_session(path, _session([slice(0, 2)]))
    first = read_session(path)
    old_json = path.read_text()
    # a save that fails after writing its masks leaves the old session and masks as they were
    import napari_sam2.io.session_file as sf

    def broken(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sf, "_dumps", broken)
    with pytest.raises(OSError):
        write_session(path, _session([slice(4, 6)]))
    monkeypatch.undo()
    assert path.read_text() == old_json
    again = read_session(path)
    np.testing.assert_array_equal(again.objects[0].prompts[0].mask, first.objects[0].prompts[0].mask)
    assert listing(tmp_path / "s_masks") == ["obj1_f0.tif"]
    assert listing(tmp_path) == ["s.json", "s_masks"]
    # a successful save writes new masks under new names, then drops the ones only the old file used
    write_session(path, _session([slice(4, 6)]))
    new = read_session(path)
    assert new.objects[0].prompts[0].mask[4:6].all() and not new.objects[0].prompts[0].mask[0].any()
    assert listing(tmp_path / "s_masks") == ["obj1_f0_2.tif"]
    assert json.loads(path.read_text())["objects"][0]["prompts"][0]["mask"] == "s_masks/obj1_f0_2.tif"


def test_stats_csv_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "s.csv"
    path.write_text("earlier,complete\n")
    stats = ObjectStats()
    stats.add_frame(0, labels()[0], [1])
    import csv

    def broken(self, row):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(csv.DictWriter, "writerow", broken)
    with pytest.raises(OSError):
        stats.write_csv(path)
    assert path.read_text() == "earlier,complete\n" and listing(tmp_path) == ["s.csv"]
    monkeypatch.undo()
    stats.write_csv(path)
    assert path.read_text().startswith("frame,object_id")


def test_large_tiff_buffer_is_removed_on_failure(tmp_path, monkeypatch):
    monkeypatch.setattr(writers, "_MEMORY_BUFFER_BYTES", 0)
    with pytest.raises(KeyboardInterrupt):
        with LabelsWriter(tmp_path / "m.tif", (3, 12, 10), 2) as w:
            w.write_frame(0, labels(3)[0])
            assert len(list(tmp_path.glob(".m.tif.*.buffer"))) == 1
            raise KeyboardInterrupt
    assert listing(tmp_path) == ["m.partial.tif"]


def test_two_writers_finishing_into_one_output_leave_a_readable_file(tmp_path):
    import threading

    path = tmp_path / "same.tif"
    a, b = labels(n=6, h=200, w=200, value=1), labels(n=6, h=200, w=200, value=2)
    start = threading.Barrier(2)
    errors = []

    def write(data):
        try:
            start.wait()
            for _ in range(5):
                write_labels(path, data)
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=write, args=(d,)) for d in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    got = tifffile.imread(path)  # one complete run or the other, never a mix or a torn file
    assert any(np.array_equal(got, d) for d in (a, b))
    assert listing(tmp_path) == ["same.tif"]
