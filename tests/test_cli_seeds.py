"""``napari-sam2 segment --seeds / --auto-seed``: objects from a label image or found by SAM 2.

Runs in-process through :func:`napari_sam2.cli.main` on real files with the random tiny
network. Random weights give arbitrary masks: the checks are that seeded frames come back as the
seeds (mask prompts are exact), ids are kept, the session written replays to the same labels,
and bad seeds are one-line errors with exit status 2.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import tifffile

from napari_sam2.cli import main
from napari_sam2.samples import make_cells_timelapse

N, H, W = 6, 64, 64
LOOSE = ["--auto-seed-iou", "0", "--auto-seed-stability", "0", "--auto-seed-points", "4",
         "--auto-seed-min-area", "20"]


def _disc(cy, cx, r):
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r * r


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("seeds")
    cells = make_cells_timelapse(n_frames=N, shape=(H, W), n_cells=3, seed=0)
    tifffile.imwrite(d / "cells.tif", cells.image, imagej=True, metadata={"axes": "TYX"})
    flat = np.zeros((H, W), np.uint16)
    flat[_disc(20, 20, 8)] = 7
    flat[_disc(40, 44, 10)] = 300
    tifffile.imwrite(d / "flat.tif", flat)
    stack = np.zeros((N, H, W), np.uint32)
    stack[0][_disc(20, 20, 8)] = 5
    stack[4][_disc(40, 40, 9)] = 70000   # beyond uint16: the output becomes 32-bit
    stack[4][_disc(12, 50, 6)] = 5
    np.save(d / "stack.npy", stack)
    (d / "masks").mkdir()
    mask = np.zeros((H, W), np.uint8)
    mask[30:44, 20:40] = 1
    tifffile.imwrite(d / "masks" / "m.tif", mask)
    (d / "session.json").write_text(json.dumps({"format": "napari-sam2-session", "version": 1, "objects": [
        {"id": 1, "name": "clicked", "prompts": [{"frame": 0, "points": [[20, 20]], "labels": [1]}]},
        {"id": 2, "name": "masked", "prompts": [{"frame": 2, "mask": "masks/m.tif"}]}]}))
    return {"dir": d, "flat": flat, "stack": stack}


def run_ok(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    assert "Traceback" not in err
    return err


def test_flat_seeds_keep_their_ids_and_the_session_replays(files, tmp_path, tiny_model_dir, capsys):
    d = files["dir"]
    out, run_json = tmp_path / "labels.tif", tmp_path / "run.json"
    err = run_ok(["segment", str(d / "cells.tif"), "--seeds", str(d / "flat.tif"), "--seed-frame", "2",
                  "--out", str(out), "--save-session", str(run_json), "--stats", str(tmp_path / "s.csv"),
                  "--model", str(tiny_model_dir)], capsys)
    assert "seeded 2 object(s) from flat.tif on frame 2" in err
    labels = tifffile.imread(out)
    assert labels.shape == (N, H, W) and labels.dtype == np.uint16
    assert set(np.unique(labels).tolist()) <= {0, 7, 300}
    np.testing.assert_array_equal(labels[2], files["flat"])  # a seed is the truth on its frame
    saved = json.loads(run_json.read_text())
    assert [o["id"] for o in saved["objects"]] == [7, 300]
    assert all(o["prompts"] == [{"frame": 2, "mask": f"run_masks/obj{o['id']}_f2.tif"}]
               for o in saved["objects"])
    assert "object 7" in (tmp_path / "s.csv").read_text()
    # the session file records the seeded objects: replaying it gives the same labels
    again = tmp_path / "again.tif"
    run_ok(["segment", str(d / "cells.tif"), "--prompts", str(run_json), "--out", str(again)], capsys)
    np.testing.assert_array_equal(tifffile.imread(again), labels)


def test_stack_seeds_with_prompts(files, tmp_path, tiny_model_dir, capsys):
    d = files["dir"]
    out = tmp_path / "labels.tif"
    err = run_ok(["segment", str(d / "cells.tif"), "--prompts", str(d / "session.json"),
                  "--seeds", str(d / "stack.npy"), "--out", str(out), "--model", str(tiny_model_dir)], capsys)
    assert "seeded 2 object(s) from stack.npy on 2 frames" in err
    labels = tifffile.imread(out)
    assert labels.dtype == np.uint32
    assert {1, 2, 5, 70000} <= set(np.unique(labels).tolist()) <= {0, 1, 2, 5, 70000}
    stack = files["stack"]
    for f in (0, 4):  # seeded frames: every seed pixel holds its id unless a higher id is there
        seeded = stack[f] > 0
        assert np.all((labels[f][seeded] == stack[f][seeded]) | (labels[f][seeded] > stack[f][seeded]))
    assert (labels[4][stack[4] == 70000] == 70000).all()
    only4 = tmp_path / "only4.tif"
    run_ok(["segment", str(d / "cells.tif"), "--seeds", str(d / "stack.npy"), "--seed-frame", "4",
            "--direction", "forward", "--out", str(only4), "--model", str(tiny_model_dir)], capsys)
    lab4 = tifffile.imread(only4)
    assert lab4[:4].max() == 0  # forward from the only seeded frame
    np.testing.assert_array_equal(lab4[4], stack[4])


def test_auto_seed_writes_what_it_found(files, tmp_path, tiny_model_dir, capsys):
    d = files["dir"]
    out, found = tmp_path / "labels.tif", tmp_path / "found.tif"
    err = run_ok(["segment", str(d / "cells.tif"), "--auto-seed", "1", "--auto-seed-out", str(found),
                  "--out", str(out), "--model", str(tiny_model_dir), *LOOSE], capsys)
    seeds = tifffile.imread(found)
    assert seeds.shape == (H, W) and seeds.dtype == np.uint16
    ids = np.unique(seeds)[1:]
    assert len(ids) >= 1 and ids.tolist() == list(range(1, len(ids) + 1))
    assert f"found {len(ids)} object(s) on frame 1" in err
    labels = tifffile.imread(out)
    np.testing.assert_array_equal(labels[1], seeds)  # non-overlapping seeds come back unchanged
    assert set(np.unique(labels).tolist()) <= {0, *ids.tolist()}
    # with prompts, found objects get ids above the session's
    out2, found2 = tmp_path / "labels2.tif", tmp_path / "found2.tif"
    run_ok(["segment", str(d / "cells.tif"), "--prompts", str(d / "session.json"), "--auto-seed", "1",
            "--auto-seed-out", str(found2), "--out", str(out2), "--model", str(tiny_model_dir), *LOOSE],
           capsys)
    ids2 = np.unique(tifffile.imread(found2))[1:]
    assert ids2.min() == 3
    np.testing.assert_array_equal(tifffile.imread(found2) > 0, seeds > 0)  # same objects, shifted ids


@pytest.fixture(scope="module")
def bad(files):
    d = files["dir"]
    tifffile.imwrite(d / "small.tif", np.ones((32, 32), np.uint16))
    np.save(d / "frames4.npy", np.ones((4, H, W), np.uint16))
    np.save(d / "prob.npy", np.full((H, W), 0.5, np.float32))
    np.save(d / "neg.npy", np.full((H, W), -3, np.int16))
    np.save(d / "empty.npy", np.zeros((H, W), np.uint8))
    np.save(d / "rgb.npy", np.ones((H, W, 3), np.uint8))
    return d


BAD = [
    (["--seeds", "{d}/small.tif"], r"frames of 32x32 pixels but the input's frames are 64x64"),
    (["--seeds", "{d}/frames4.npy"], r"stack of 4 label frames but the input has 6 frames"),
    (["--seeds", "{d}/prob.npy"], r"fractional or NaN values: seeds are a label image"),
    (["--seeds", "{d}/neg.npy"], r"negative values \(-3\)"),
    (["--seeds", "{d}/empty.npy"], r"'empty\.npy' holds no label"),
    (["--seeds", "{d}/rgb.npy"], r"is a colour image"),
    (["--seeds", "{d}/nope.tif"], r"--seeds '.*nope\.tif' does not exist"),
    (["--seeds", "{d}/flat.tif", "--seed-frame", "6"],
     r"--seed-frame 6 is out of range: the input has 6 frames"),
    (["--seed-frame", "1", "--prompts", "{d}/session.json"], r"--seed-frame needs --seeds"),
    (["--seeds", "{d}/flat.tif", "--auto-seed", "0"], r"choose --seeds or --auto-seed"),
    (["--auto-seed", "9"], r"--auto-seed 9 is out of range"),
    (["--auto-seed", "0", "--auto-seed-out", "{d}/found.png"], r"use a \.tif name"),
    (["--auto-seed", "0", "--auto-seed-iou", "2"], r"--auto-seed-iou 2: give a threshold between 0 and 1"),
    (["--auto-seed", "0"], r"--auto-seed found no object on frame 0"),  # random weights: nothing passes 0.8
]


@pytest.mark.parametrize("args, message", BAD, ids=[m for _, m in BAD])
def test_bad_seeds_exit_2_with_one_line(bad, tmp_path, tiny_model_dir, capsys, args, message):
    out = tmp_path / "labels.tif"
    argv = ["segment", str(bad / "cells.tif"), *[a.format(d=bad) for a in args], "--out", str(out),
            "--model", str(tiny_model_dir), "--auto-seed-points", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("napari-sam2: error:")]
    assert len(errors) == 1, err
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in err
    assert not out.exists()


def test_prompts_or_seeds_are_required(capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", "x.tif", "--out", "y.tif"])
    assert info.value.code == 2
    assert "required: --prompts (or --seeds or --auto-seed)" in capsys.readouterr().err
