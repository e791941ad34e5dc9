"""Session files: the issue's example read exactly, validation errors, versions, engine round trip."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import tifffile

from napari_sam2.errors import SessionFileError
from napari_sam2.io.session_file import (
    SESSION_FORMAT,
    SessionFile,
    SessionObject,
    SessionSettings,
    check_session_fits,
    parse_session,
    read_session,
    replay,
    session_from_engine,
    write_session,
)
from napari_sam2.prompts import Prompt

ISSUE_EXAMPLE = """
{"format": "napari-sam2-session", "version": 1,
 "objects": [{"id": 1, "name": "cell 1",
              "prompts": [{"frame": 0, "points": [[120.0, 88.5], [131, 90]], "labels": [1, 0]},
                          {"frame": 12, "box": [[100, 70], [140, 110]]},
                          {"frame": 30, "mask": "masks/obj1_f30.tif"}]}]}
"""


@pytest.fixture
def example(tmp_path):
    (tmp_path / "masks").mkdir()
    mask = np.zeros((200, 160), np.uint8)
    mask[100:140, 70:110] = 255
    tifffile.imwrite(tmp_path / "masks" / "obj1_f30.tif", mask)
    path = tmp_path / "session.json"
    path.write_text(ISSUE_EXAMPLE)
    return path


def valid_dict():
    return {"format": SESSION_FORMAT, "version": 1,
            "settings": {"axis": 0, "contrast": [100, 2000]},
            "objects": [{"id": 1, "name": "a", "prompts": [
                {"frame": 0, "points": [[10, 12], [20, 22]], "labels": [1, 0]},
                {"frame": 3, "box": [[5, 5], [30, 40]]}]}]}


def test_issue_example_is_read_exactly(example):
    sf = read_session(example)
    assert sf.path == example and sf.ids == [1] and sf.names == {1: "cell 1"}
    points, box, mask = sf.objects[0].prompts
    assert (points.frame, points.kind) == (0, "points")
    np.testing.assert_array_equal(points.points, [[120.0, 88.5], [131, 90]])
    np.testing.assert_array_equal(points.labels, [1, 0])
    assert not points.replace
    assert (box.frame, box.kind) == (12, "box")
    np.testing.assert_array_equal(box.box, [[100, 70], [140, 110]])
    assert (mask.frame, mask.kind, mask.mask_path) == (30, "mask", "masks/obj1_f30.tif")
    assert mask.mask.dtype == bool and mask.mask.sum() == 40 * 40 and mask.mask[120, 90]
    assert sf.objects[0].frames == [0, 12, 30]
    assert sf.settings == SessionSettings()  # no settings recorded: all defaults


def test_write_then_read_round_trip_keeps_everything(tmp_path, example):
    sf = read_session(example)
    sf.settings = SessionSettings(model="sam2.1-small", precision="bfloat16", axis=1, channels=[0, 2],
                                  contrast=[[0.0, 10.5], [2.0, 9.0]], image_layer="cells",
                                  frame_shape=(200, 160), n_frames=40, extra={"note": "kept"})
    sf.objects[0].extra = {"color": "#ff8800"}
    sf.extra = {"created_by": "a test"}
    out = write_session(tmp_path / "copy.json", sf)
    text = out.read_text()
    assert '{"frame": 12, "box": [[100, 70], [140, 110]]}' in text  # one line per prompt
    back = read_session(out)
    assert back.settings == sf.settings
    assert back.objects[0].extra == {"color": "#ff8800"} and back.extra == {"created_by": "a test"}
    assert back.objects[0].prompts[2].mask_path == "copy_masks/obj1_f30.tif"
    for a, b in zip(sf.objects[0].prompts, back.objects[0].prompts):
        assert (a.frame, a.kind, a.replace) == (b.frame, b.kind, b.replace)
        for field in ("points", "labels", "box", "mask"):
            x, y = getattr(a, field), getattr(b, field)
            assert (x is None and y is None) or np.array_equal(x, y)


def test_two_sessions_in_one_folder_keep_their_own_masks(tmp_path):
    def session_with(value):
        mask = np.zeros((8, 8), bool)
        mask[value, :] = True
        return SessionFile(objects=[SessionObject(1, "x", [Prompt(0, "mask", mask=mask)])])

    write_session(tmp_path / "a.json", session_with(1))
    write_session(tmp_path / "b.json", session_with(5))
    assert read_session(tmp_path / "a.json").objects[0].prompts[0].mask[1].all()
    assert read_session(tmp_path / "b.json").objects[0].prompts[0].mask[5].all()


def _set(path, value):
    def apply(d):
        *keys, last = path
        node = d
        for k in keys:
            node = node[k]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
        return d
    return apply


_DELETE = object()
P0 = ("objects", 0, "prompts", 0)

INVALID = [
    (_set(("format",), "something-else"), r"format: not a napari-sam2 session file"),
    (_set(("version",), 2), r"version: .*format version 2, written by a newer napari-sam2.*update"),
    (_set(("version",), 0), r"version: unknown session format version 0"),
    (_set(("version",), "1"), r"version: expected an integer format version"),
    (_set(("objects",), _DELETE), r"missing 'objects'"),
    (_set(("objects",), {"id": 1}), r"objects: expected a list"),
    (_set(("objects", 0, "id"), 0), r"objects\[0\]\.id: expected an integer >= 1, got 0"),
    (_set(("objects", 0, "id"), 1.5), r"objects\[0\]\.id: expected an integer"),
    (_set(("objects", 0, "name"), 3), r"objects\[0\]\.name: expected a string"),
    (_set((*P0, "labels"), [1]), r"objects\[0\]\.prompts\[0\]\.labels: 1 labels for 2 points"),
    (_set((*P0, "labels"), [1, 2]), r"objects\[0\]\.prompts\[0\]\.labels\[1\]: a label is 1 \(object\) or 0"),
    (_set((*P0, "labels"), _DELETE), r"objects\[0\]\.prompts\[0\]: missing 'labels'"),
    (_set((*P0, "points"), [[10, "a"]]),
     r"objects\[0\]\.prompts\[0\]\.points\[0\]\[1\]: expected a finite number"),
    (_set((*P0, "points"), [[10, 12, 3]]),
     r"objects\[0\]\.prompts\[0\]\.points\[0\]: expected a list of 2 items"),
    (_set((*P0, "frame"), -1), r"objects\[0\]\.prompts\[0\]\.frame: expected an integer >= 0"),
    (_set((*P0, "frame"), _DELETE), r"objects\[0\]\.prompts\[0\]: missing 'frame'"),
    (_set((*P0, "box"), [[1, 1], [5, 5]]),
     r"objects\[0\]\.prompts\[0\]: a prompt has exactly one of .*got points, box"),
    (_set((*P0, "colour"), "red"), r"objects\[0\]\.prompts\[0\]\.colour: unknown key for a points prompt"),
    (_set((*P0, "replace"), "yes"), r"objects\[0\]\.prompts\[0\]\.replace: expected true or false"),
    (_set(("objects", 0, "prompts", 1, "box"), [[5, 5], [5, 40]]),
     r"prompts\[1\]\.box: .*zero height or width"),
    (_set(("objects", 0, "prompts", 1), {"frame": 2, "mask": "nowhere.tif"}),
     r"objects\[0\]\.prompts\[1\]\.mask: mask file 'nowhere.tif' not found"),
    (_set(("settings", "contrast"), [5, 1]), r"settings\.contrast: contrast limits need high > low"),
    (_set(("settings", "channels"), [0, 1, 2, 3]), r"settings\.channels: choose one to three channels"),
    (_set(("settings", "axis"), "t"), r"settings\.axis: expected an integer"),
    (_set(("settings", "precision"), "float64"),
     r"settings\.precision: expected one of float32, bfloat16, float16, got \"float64\""),
]


@pytest.mark.parametrize("mutate, message", INVALID, ids=[m for _, m in INVALID])
def test_validation_names_the_json_path(tmp_path, mutate, message):
    data = mutate(copy.deepcopy(valid_dict()))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(SessionFileError, match=message) as info:
        read_session(path)
    assert str(info.value).startswith(str(path))


def test_duplicate_ids_and_unreadable_files(tmp_path):
    data = valid_dict()
    data["objects"].append(copy.deepcopy(data["objects"][0]))
    with pytest.raises(SessionFileError, match=r"objects\[1\]\.id: object id 1 is also used by objects\[0\]"):
        parse_session(data)
    bad = tmp_path / "s.json"
    bad.write_text('{"format": "napari-sam2-session",\n "version": 1,,}')
    with pytest.raises(SessionFileError, match="invalid JSON at line 2"):
        read_session(bad)
    with pytest.raises(SessionFileError, match="does not exist"):
        read_session(tmp_path / "missing.json")


def test_check_session_fits_the_stack():
    sf = parse_session(valid_dict())
    check_session_fits(sf, n_frames=4, frame_shape=(64, 64))
    with pytest.raises(SessionFileError, match=r"objects\[0\]\.prompts\[1\]\.frame: frame 3 is out of range: "
                                               r"the input has 3 frames \(0\.\.2\)"):
        check_session_fits(sf, n_frames=3, frame_shape=(64, 64))
    sf.settings.frame_shape = (128, 64)
    with pytest.raises(SessionFileError,
                       match="made on frames of 128x64 pixels but the input's frames are 64x64"):
        check_session_fits(sf, n_frames=4, frame_shape=(64, 64))
    sf.settings.frame_shape = None
    sf.objects.append(SessionObject(2, "empty"))
    with pytest.raises(SessionFileError, match=r"objects\[1\]: object 2 \('empty'\) has no prompts"):
        check_session_fits(sf, n_frames=4, frame_shape=(64, 64))
    with pytest.raises(SessionFileError, match="no object"):
        check_session_fits(SessionFile(), 4, (64, 64))


def test_the_precision_a_session_ran_in_is_recorded(tiny_model):
    import torch

    from napari_sam2 import Sam2Session, load_model

    bf16 = load_model(tiny_model, device="cpu", dtype="bfloat16")
    assert bf16.autocast_dtype == torch.bfloat16
    session = Sam2Session(bf16, np.zeros((3, 32, 32), np.uint8))
    assert session_from_engine(session).settings.precision == "bfloat16"
    # what the caller says wins (e.g. a file being re-saved keeps its own)
    assert session_from_engine(session, SessionSettings(precision="float16")).settings.precision == "float16"


def test_engine_session_round_trip_reproduces_masks(tmp_path, tiny_model):
    from napari_sam2 import Sam2Session
    from napari_sam2.samples import make_cells_timelapse

    cells = make_cells_timelapse(n_frames=6, shape=(64, 64), n_cells=3, seed=1)
    original = Sam2Session(tiny_model, cells.image)
    original.add_points(0, 1, [[20, 20], [40, 40]], [1, 0])
    original.add_points(0, 1, [[22, 25]], [1])              # a refinement click
    original.add_points(2, 1, [[30, 30]], [1], replace=True)
    original.add_box(3, 2, [[10, 10], [40, 45]])
    original.add_mask(5, 3, cells.labels[5] == cells.labels[5].max())
    names = {1: "first", 2: "second", 3: "third"}
    sf = session_from_engine(original, SessionSettings(axis=0, image_layer="cells"), names=names)
    assert sf.settings.frame_shape == (64, 64) and sf.settings.n_frames == 6
    assert sf.settings.precision == "float32"  # the model's: plain float32, no autocast
    assert [p.kind for p in sf.objects[0].prompts] == ["points", "points", "points"]
    assert sf.objects[0].prompts[2].replace
    path = write_session(tmp_path / "run.json", sf)
    loaded = read_session(path)
    assert loaded.names == names and loaded.settings.image_layer == "cells"

    replayed = Sam2Session(tiny_model, cells.image, contrast=loaded.settings.contrast)
    np.testing.assert_allclose(replayed.contrast, original.contrast)
    replay(loaded, replayed)
    assert replayed.objects == original.objects
    for obj in original.objects:
        for frame in original.prompted_frames(obj):
            np.testing.assert_array_equal(replayed.mask(frame, obj), original.mask(frame, obj))
    # loading twice replaces the objects instead of adding the prompts again
    replay(loaded, replayed)
    assert len(replayed.prompts(1)) == len(original.prompts(1))
    a = {f: dict(m) for f, m in original.propagate(direction="forward")}
    b = {f: dict(m) for f, m in replayed.propagate(direction="forward")}
    assert a.keys() == b.keys()
    for f in a:
        for obj in a[f]:
            np.testing.assert_array_equal(a[f][obj], b[f][obj])



def test_replay_leaves_the_engine_exactly_the_prompts_that_still_count(tmp_path, tiny_model):
    from napari_sam2 import Sam2Session
    from napari_sam2.prompts import prompts_in_effect
    from napari_sam2.samples import make_cells_timelapse

    cells = make_cells_timelapse(n_frames=6, shape=(64, 64), n_cells=3, seed=1)
    tifffile.imwrite(tmp_path / "cell.tif", (cells.labels[4] == cells.labels[4].max()).astype(np.uint8))
    data = {"format": SESSION_FORMAT, "version": 1, "objects": [{"id": 1, "prompts": [
        {"frame": 0, "points": [[20, 20], [40, 40]], "labels": [1, 0]},
        {"frame": 0, "box": [[10, 10], [40, 45]]},                      # replaces the clicks
        {"frame": 0, "points": [[22, 25]], "labels": [1]},              # refines the box
        {"frame": 2, "points": [[30, 30]], "labels": [1]},
        {"frame": 2, "points": [[35, 32]], "labels": [1], "replace": True},
        {"frame": 4, "points": [[12, 12]], "labels": [1]},
        {"frame": 4, "mask": "cell.tif"},                               # replaces the click
    ]}]}
    sf = parse_session(data, base_dir=tmp_path)
    session = Sam2Session(tiny_model, cells.image)
    replay(sf, session)
    expected = prompts_in_effect(sf.objects[0].prompts)
    got = session.prompts(1)
    assert [(p.frame, p.kind, p.replace) for p in got] == [(p.frame, p.kind, p.replace) for p in expected]
    assert [(p.frame, p.kind) for p in got] == [(0, "box"), (0, "points"), (2, "points"), (4, "mask")]
    for a, b in zip(got, expected):
        for name in ("points", "labels", "box", "mask"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or np.array_equal(x, y)
    # saving captures copies: the file's mask path is set on them, not on the engine's records
    saved = session_from_engine(session)
    write_session(tmp_path / "again.json", saved)
    assert saved.objects[0].prompts[-1].mask_path == "again_masks/obj1_f4.tif"
    assert all(p.mask_path is None for p in session.prompts(1))

def test_replay_names_the_prompt_the_engine_refuses(tiny_model):
    from napari_sam2 import Sam2Session

    data = valid_dict()
    data["objects"][0]["prompts"][0]["points"] = [[10, 12], [20, 500]]  # outside a 64x64 frame
    session = Sam2Session(tiny_model, np.zeros((4, 64, 64), np.uint8))
    with pytest.raises(SessionFileError,
                       match=r"objects\[0\]\.prompts\[0\]: point \[20\.0, 500\.0\].*outside"):
        replay(data, session)


def test_settings_n_frames_is_checked(tmp_path):
    data = valid_dict()
    data.setdefault("settings", {})["n_frames"] = 40
    sf = parse_session(data)
    check_session_fits(sf, n_frames=40, frame_shape=(64, 64))
    with pytest.raises(SessionFileError, match=r"settings\.n_frames: the prompts were made on a stack of 40 "
                                               r"frames but the input has 12 along the video axis"):
        check_session_fits(sf, n_frames=12, frame_shape=(64, 64))
