"""The ``napari-sam2`` command end to end, on real files, with a real (random) SAM 2 network.

The successful runs go through the installed console script (or ``python -m napari_sam2.cli``)
in parallel subprocesses, since each pays a few seconds of imports; bad-input cases run
in-process through :func:`napari_sam2.cli.main` except two that check the real script's output.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import imageio.v2 as iio2
import imageio.v3 as iio
import numpy as np
import pytest
import tifffile
import zarr

from napari_sam2.cli import build_parser, main
from napari_sam2.samples import make_cells_timelapse

GEO_TAGS = [
    (33550, "d", 3, (10.0, 10.0, 0.0), False),
    (33922, "d", 6, (0.0, 0.0, 0.0, 600000.0, 5100000.0, 0.0), False),
    (34735, "H", 16, (1, 1, 0, 3, 1024, 0, 1, 1, 1025, 0, 1, 1, 3072, 0, 1, 32632), False),
]
MASK_FRAME = 2
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def command():
    script = shutil.which("napari-sam2")
    return [script] if script else [sys.executable, "-m", "napari_sam2.cli"]


def object5_mask():
    mask = np.zeros((64, 64), bool)
    mask[30:44, 20:40] = True
    return mask


def write_session_json(folder, prompts_1=None, version=1, extra_objects=()):
    (folder / "masks").mkdir(exist_ok=True)
    tifffile.imwrite(folder / "masks" / "obj5_f2.tif", object5_mask().astype(np.uint8))
    data = {"format": "napari-sam2-session", "version": version, "objects": [
        {"id": 1, "name": "cell one",
         "prompts": prompts_1 or [{"frame": 0, "points": [[20.0, 20.0], [50, 50]], "labels": [1, 0]}]},
        {"id": 5, "name": "cell five", "prompts": [{"frame": MASK_FRAME, "mask": "masks/obj5_f2.tif"}]},
        *extra_objects]}
    path = folder / f"session_v{version}_{len(extra_objects)}_{abs(hash(json.dumps(prompts_1)))}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli-inputs")
    cells = make_cells_timelapse(n_frames=8, shape=(64, 64), n_cells=3, seed=0)
    tifffile.imwrite(d / "cells.tif", cells.image, imagej=True, resolution=(2.0, 2.0),
                     metadata={"axes": "TYX", "unit": "\\u00B5m", "finterval": 2.0})
    tifffile.imwrite(d / "scene.tif", cells.image[:6], extratags=GEO_TAGS, photometric="minisblack")
    rgb = np.repeat((cells.image[:8] // 16).astype(np.uint8)[..., None], 3, axis=-1)
    iio2.mimwrite(d / "movie.mp4", rgb, fps=5, codec="libx264", macro_block_size=16)
    iio.imwrite(d / "anim.gif", rgb[:6], duration=200, loop=0)
    (d / "pngs").mkdir()
    for i in range(6):
        iio.imwrite(d / "pngs" / f"frame{i}.png", rgb[i, ..., 0])
    return {"dir": d, "session": write_session_json(d), "cells": cells}


class Run:
    def __init__(self, args, out_dir):
        self.args = args
        self.proc = subprocess.Popen(args, cwd=out_dir, env=ENV, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def wait(self):
        if not hasattr(self, "stderr"):
            self.stdout, self.stderr = self.proc.communicate(timeout=600)
            self.returncode = self.proc.returncode
        return self


@pytest.fixture(scope="module")
def runs(inputs, tiny_model_dir, tmp_path_factory):
    """Start every end-to-end run at once (they mostly wait on imports), then collect them."""
    d, session = inputs["dir"], str(inputs["session"])
    out = tmp_path_factory.mktemp("cli-out")
    model = ["--model", str(tiny_model_dir)]
    cmd, mod = command(), [sys.executable, "-m", "napari_sam2.cli"]
    data = json.loads(inputs["session"].read_text())
    data["settings"] = {"precision": "bfloat16"}
    bf16_session = str(d / "session_bf16.json")  # beside the first: the same mask files
    (d / "session_bf16.json").write_text(json.dumps(data))
    specs = {
        "tiff": cmd + ["segment", str(d / "cells.tif"), "--prompts", session, "--out", "cells_labels.tif",
                       "--stats", "cells.csv", "--save-session", "run.json", *model],
        "geotiff": mod + ["segment", str(d / "scene.tif"), "--prompts", session, "--out", "scene_labels.tif",
                          *model],
        "mp4": mod + ["segment", str(d / "movie.mp4"), "--prompts", session, "--out", "movie.ome.zarr",
                      "--device", "cpu", *model],
        "gif": mod + ["segment", str(d / "anim.gif"), "--prompts", session, "--out", "anim_labels.tif",
                      "--direction", "forward", "--stop", "4", *model],
        "pngs": mod + ["segment", str(d / "pngs"), "--prompts", session, "--out", "pngs_labels.tif",
                       "--contrast", "0", "255", *model],
        "bf16": mod + ["segment", str(d / "cells.tif"), "--prompts", session, "--out", "bf16_labels.tif",
                       "--precision", "bfloat16", "--device", "cpu", *model],
        "missing": cmd + ["segment", str(d / "nope.tif"), "--prompts", session, "--out", "x.tif"],
        # a session made in bfloat16 replays in bfloat16, unless --precision says otherwise
        "session_bf16": mod + ["segment", str(d / "cells.tif"), "--prompts", bf16_session, "--out",
                               "session_bf16_labels.tif", "--device", "cpu", *model],
        "session_bf16_f32": mod + ["segment", str(d / "cells.tif"), "--prompts", bf16_session, "--out",
                                   "session_f32_labels.tif", "--precision", "float32", "--device", "cpu",
                                   *model],
    }
    started = {name: Run(args, out) for name, args in specs.items()}
    return {name: run.wait() for name, run in started.items()}, out


def ok(run):
    assert run.returncode == 0, run.stderr
    assert "Traceback" not in run.stderr
    return run


def check_ids(labels):
    ids = set(np.unique(labels).tolist())
    assert ids <= {0, 1, 5}
    assert {1, 5} <= ids
    # object 5's mask prompt is returned unchanged on its frame and has the higher id
    assert (labels[MASK_FRAME][object5_mask()] == 5).all()


# --------------------------------------------------------------------------- successful runs
def test_tiff_with_voxel_size_stats_and_session(runs):
    results, out = runs
    run = ok(results["tiff"])
    assert "wrote cells_labels.tif (8 of 8 frames segmented)" in run.stderr
    assert "segmenting" in run.stderr  # the progress bar
    with tifffile.TiffFile(out / "cells_labels.tif") as tif:
        assert tif.is_imagej and tif.series[0].axes == "TYX"
        labels = tif.asarray()
        assert labels.shape == (8, 64, 64) and labels.dtype == np.uint16
        ij = tif.imagej_metadata
        assert ij["finterval"] == 2.0 and ij["unit"] == "\\u00B5m"
        np.testing.assert_allclose(tif.pages[0].get_resolution(), (2.0, 2.0))
    check_ids(labels)
    with open(out / "cells.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 16  # two objects on each of 8 frames
    for row in rows:
        frame, obj = int(row["frame"]), int(row["object_id"])
        assert int(row["area_px"]) == int((labels[frame] == obj).sum())
        assert float(row["area"]) == pytest.approx(int(row["area_px"]) * 0.25)
        assert row["area_unit"] == "µm^2"
    five = next(r for r in rows if r["frame"] == str(MASK_FRAME) and r["object_id"] == "5")
    assert five["object_name"] == "cell five" and int(five["area_px"]) == object5_mask().sum()
    assert float(five["presence"]) > 0.5
    saved = json.loads((out / "run.json").read_text())
    assert saved["settings"]["axis"] == 0 and len(saved["settings"]["contrast"]) == 2
    assert os.path.isabs(saved["settings"]["model"]) and os.path.isdir(saved["settings"]["model"])
    assert saved["settings"]["frame_shape"] == [64, 64]
    assert saved["objects"][1]["prompts"][0]["mask"] == "run_masks/obj5_f2.tif"


def test_precision_bfloat16_gives_the_float32_labels_within_rounding(runs):
    res, out = runs
    run = ok(res["bf16"])
    assert "bfloat16" in run.stderr  # the model line says which precision runs
    bf16 = tifffile.imread(out / "bf16_labels.tif")
    f32 = tifffile.imread(out / "cells_labels.tif")
    check_ids(bf16)
    assert bf16.shape == f32.shape
    for obj in (1, 5):  # the same objects, up to the rounding of bfloat16 arithmetic
        a, b = bf16 == obj, f32 == obj
        assert np.logical_and(a, b).sum() / np.logical_or(a, b).sum() > 0.9, obj


def test_a_session_replays_in_its_own_precision_unless_told(runs):
    import torch

    from napari_sam2.engine.devices import native_precision

    res, out = runs
    run = ok(res["session_bf16"])
    assert "loading model" in run.stderr and "bfloat16" in run.stderr
    replayed = tifffile.imread(out / "session_bf16_labels.tif")
    if native_precision(torch.bfloat16, torch.device("cpu")) is False:
        # this CPU computes bfloat16 emulated (~9x slower): the replay runs in auto, and says so
        assert "the session was made in bfloat16, which this CPU computes about 9x slower" in run.stderr
        assert "(choose with --precision)" in run.stderr and "warning" not in run.stderr
        np.testing.assert_array_equal(replayed, tifffile.imread(out / "cells_labels.tif"))
        # asked for explicitly, it runs, with a warning that says what to choose instead
        assert "warning: this CPU has no bfloat16 arithmetic" in ok(res["bf16"]).stderr
    else:
        np.testing.assert_array_equal(replayed, tifffile.imread(out / "bf16_labels.tif"))
        assert "warning" not in ok(res["bf16"]).stderr
    run = ok(res["session_bf16_f32"])
    assert "bfloat16" not in run.stderr
    np.testing.assert_array_equal(tifffile.imread(out / "session_f32_labels.tif"),
                                  tifffile.imread(out / "cells_labels.tif"))


def test_a_session_precision_this_device_cannot_run_or_emulates_falls_back_to_auto(monkeypatch):
    import argparse

    import torch

    from napari_sam2 import cli
    from napari_sam2.engine import devices
    from napari_sam2.errors import ModelLoadError
    from napari_sam2.io.session_file import SessionSettings

    monkeypatch.setattr(devices, "native_precision", lambda dtype, device: True)  # as with AMX
    args = argparse.Namespace(precision=None, device="cpu")
    assert cli._precision(args, SessionSettings()) == ("auto", None)
    assert cli._precision(args, SessionSettings(precision="bfloat16")) == ("bfloat16", None)
    assert cli._slow_precision("bfloat16", "cpu") is None

    monkeypatch.setattr(devices, "native_precision",  # as a CPU without bfloat16 arithmetic
                        lambda dtype, device: dtype in (None, torch.float32))
    precision, note = cli._precision(args, SessionSettings(precision="bfloat16"))
    assert precision == "auto"
    assert note.startswith("napari-sam2: the session was made in bfloat16, which this CPU computes")
    assert "AVX-512 BF16 or AMX" in note and note.endswith("(choose with --precision)")
    assert "no bfloat16 arithmetic" in cli._slow_precision("bfloat16", "cpu")
    assert cli._slow_precision("float32", "cpu") is None

    def refuse(dtype, device):  # as a CPU without float16 autocast would
        raise ModelLoadError(f"dtype={dtype!r} cannot be used on cpu")

    monkeypatch.setattr(devices, "autocast_dtype", refuse)
    precision, note = cli._precision(args, SessionSettings(precision="float16"))
    assert precision == "auto"
    assert "the session was made in float16, which this device cannot run" in note and "--precision" in note
    assert cli._slow_precision("float16", "cpu") is None  # load_model gives the refusal itself
    args.precision = "float32"  # asked for: used as given, no note
    assert cli._precision(args, SessionSettings(precision="float16")) == ("float32", None)


def test_geotiff_keeps_georeferencing(runs):
    results, out = runs
    ok(results["geotiff"])
    with tifffile.TiffFile(out / "scene_labels.tif") as tif:
        tif.pages.useframes = False
        assert len(tif.pages) == 6
        for i in range(6):
            for code, _, _, value, _ in GEO_TAGS:
                assert tuple(tif.pages[i].tags[code].value) == value
        assert tif.geotiff_metadata["ProjectedCSTypeGeoKey"] == 32632
        labels = tif.asarray()
    assert labels.shape == (6, 64, 64)
    check_ids(labels)


def test_mp4_to_ome_zarr(runs):
    results, out = runs
    ok(results["mp4"])
    group = zarr.open_group(str(out / "movie.ome.zarr"), mode="r")
    labels = group["0"][:]
    assert labels.shape == (8, 64, 64) and labels.dtype == np.uint16
    check_ids(labels)
    assert group.attrs["multiscales"][0]["axes"][0]["name"] == "t"


def test_gif_forward_with_stop(runs):
    results, out = runs
    ok(results["gif"])
    labels = tifffile.imread(out / "anim_labels.tif")
    assert labels.shape == (6, 64, 64)
    check_ids(labels[:4])
    assert labels[4:].max() == 0  # not segmented: --stop 4


def test_png_folder(runs):
    results, out = runs
    ok(results["pngs"])
    labels = tifffile.imread(out / "pngs_labels.tif")
    assert labels.shape == (6, 64, 64)
    check_ids(labels)


def test_real_script_reports_bad_input_in_one_line(runs):
    run = runs[0]["missing"]
    assert run.returncode == 2
    assert re.fullmatch(r"napari-sam2: error: input '.*nope\.tif' does not exist\n", run.stderr), run.stderr


# --------------------------------------------------------------------------- bad input, in-process
@pytest.fixture
def bad_inputs(inputs, tmp_path):
    d = inputs["dir"]
    (tmp_path / "data.xyz").write_bytes(b"12345")
    newer = json.loads(inputs["session"].read_text())
    newer["version"] = 7
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    return {
        "dir": d, "tmp": tmp_path,
        "far": write_session_json(tmp_path, [{"frame": 20, "points": [[5, 5]], "labels": [1]}]),
        "empty": write_session_json(tmp_path, extra_objects=[{"id": 9, "name": "ghost", "prompts": []}]),
        "newer": tmp_path / "newer.json",
    }


CASES = [
    (["{dir}/nope.tif"], r"input '.*nope\.tif' does not exist"),
    (["{tmp}/data.xyz"], r"unknown input format '\.xyz'"),
    (["{dir}/cells.tif", "--prompts", "{far}"],
     r"prompts\[0\]\.frame: frame 20 is out of range: the input has 8 frames"),
    (["{dir}/cells.tif", "--prompts", "{empty}"], r"object 9 \('ghost'\) has no prompts"),
    (["{dir}/cells.tif", "--prompts", "{newer}"], r"format version 7, written by a newer napari-sam2"),
    (["{dir}/cells.tif", "--prompts", "{tmp}/none.json"], r"session file '.*none\.json' does not exist"),
    (["{dir}/cells.tif", "--contrast", "5", "1"], r"--contrast 5 1: LO must be below HI"),
    (["{dir}/cells.tif", "--out", "{tmp}/labels.png"], r"unknown output format for '.*labels\.png'"),
    (["{dir}/cells.tif", "--out", "{tmp}/no/labels.tif"], r"--out: the folder '.*no' does not exist"),
    (["{dir}/cells.tif", "--out", "{dir}/cells.tif"], r"is the input"),
    (["{dir}/cells.tif", "--stop", "9"], r"--stop 9 is out of range: the input has 8 frames"),
    (["{dir}/cells.tif", "--start", "5", "--stop", "5"], r"--stop 5 must be greater than --start 5"),
    (["{dir}/cells.tif", "--axis", "3"], r"--axis 3 does not exist: 'cells.tif' has 3 axes TYX"),
    (["{dir}/cells.tif", "--axis", "1"], r"axis 1 of 'cells.tif' is the Y axis"),
    (["{dir}/cells.tif", "--stats", "{tmp}/stats.txt"], r"use a \.csv name"),
    (["{dir}/cells.tif", "--model", "{tmp}/no-such-model"], r"no such file or folder"),
    (["{dir}/cells.tif", "--model", "sam3-gigantic"], r"unknown model 'sam3-gigantic'"),
    (["{dir}/cells.tif", "--device", "tpu"], r"tpu"),
    (["{dir}/cells.tif", "--channels", "1"], r"channels were given but the stack has no channel axis"),
]


@pytest.mark.parametrize("args, message", CASES, ids=[m for _, m in CASES])
def test_bad_input_exits_2_with_one_line(bad_inputs, inputs, tiny_model_dir, capsys, args, message):
    fill = {"dir": bad_inputs["dir"], "tmp": bad_inputs["tmp"], "far": bad_inputs["far"],
            "empty": bad_inputs["empty"], "newer": bad_inputs["newer"]}
    argv = ["segment"] + [a.format(**fill) for a in args]
    if "--prompts" not in argv:
        argv += ["--prompts", str(inputs["session"])]
    if "--out" not in argv:
        argv += ["--out", str(bad_inputs["tmp"] / "labels.tif")]
    if "--model" not in argv:
        argv += ["--model", str(tiny_model_dir)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("napari-sam2: error:")]
    assert len(errors) == 1, err
    assert re.search(message, errors[0]), errors[0]
    assert "Traceback" not in err
    assert not (bad_inputs["tmp"] / "labels.tif").exists()  # nothing written on bad input


def test_unknown_precision_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["segment", "in.tif", "--prompts", "s.json", "--out", "o.tif", "--precision", "float64"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--precision" in err and "bfloat16" in err


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["segment", "x.tif", "--out", "y.tif"])
    assert info.value.code == 2
    assert "the following arguments are required: --prompts" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["segment", "x.tif", "--prompts", "s.json", "--out", "y.tif", "--direction", "sideways"])
    assert "invalid choice: 'sideways'" in capsys.readouterr().err


def test_help_documents_the_overlap_rule():
    parser = build_parser()
    segment = parser._subparsers._group_actions[0].choices["segment"]
    assert "the object with the higher id wins" in segment.format_help()


# --------------------------------------------------------------------------- Ctrl-C
def test_sigint_writes_a_valid_partial_file(tmp_path, tiny_model_dir):
    n = 150
    stack = np.random.default_rng(0).integers(0, 255, (n, 64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "long.tif", stack, imagej=True, metadata={"axes": "TYX"})
    session = write_session_json(tmp_path, prompts_1=[{"frame": 0, "mask": "masks/obj5_f2.tif"}])
    args = [sys.executable, "-m", "napari_sam2.cli", "segment", str(tmp_path / "long.tif"),
            "--prompts", str(session), "--out", "partial.tif", "--stats", "partial.csv",
            "--direction", "forward", "--model", str(tiny_model_dir)]
    proc = subprocess.Popen(args, cwd=tmp_path, env=ENV, stderr=subprocess.PIPE, text=True)
    seen = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        m = re.findall(rf"(\d+)/{n}", "".join(seen))
        if m and int(m[-1]) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "".join(seen)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130
    reader.join(timeout=10)
    err = "".join(seen)
    assert "Traceback" not in err
    m = re.search(rf"interrupted \(Ctrl-C\) after (\d+) of {n} steps: wrote the (\d+) frames reached "
                  r"to partial\.partial\.tif", err)
    assert m, err
    done = int(m.group(2))
    assert 3 <= done < n
    assert not (tmp_path / "partial.tif").exists()  # the output name only ever holds a complete run
    labels = tifffile.imread(tmp_path / "partial.partial.tif")
    assert labels.shape == (n, 64, 64) and labels.dtype == np.uint16
    assert labels[done:].max() == 0  # frames not reached stay 0
    assert (labels[0][object5_mask()] >= 1).all()  # the prompted frame is there
    with open(tmp_path / "partial.partial.csv", newline="") as fh:
        frames = {int(r["frame"]) for r in csv.DictReader(fh)}
    assert frames == set(range(done))


# --------------------------------------------------------------------------- view
@pytest.mark.gui
def test_view_opens_the_stack_in_napari(inputs, make_napari_viewer, capsys):
    from napari_sam2.cli import open_in_viewer
    from napari_sam2.io.readers import open_stack
    from napari_sam2.io.session_file import read_session

    viewer = make_napari_viewer()
    stack = open_stack(inputs["dir"] / "movie.mp4")
    layers, widget = open_in_viewer(viewer, stack, read_session(inputs["session"]))
    (layer,) = layers
    assert layer.rgb and layer.data.shape == (8, 64, 64, 3)
    tif_layers, _ = open_in_viewer(viewer, open_stack(inputs["dir"] / "cells.tif"))
    assert tuple(tif_layers[0].scale) == pytest.approx((2.0, 0.5, 0.5))
    assert len(viewer.layers) == 2
    if widget is None:  # the widget is not installed in this environment: said on stderr
        assert "could not dock the SAM 2 widget" in capsys.readouterr().err
    else:  # its session's model load (refused offline) ends before the viewer is closed
        widget.wait()


@pytest.mark.gui
def test_view_says_how_an_ambiguous_file_was_read(tmp_path, make_napari_viewer, capsys):
    """A note of the reader (here: a stack tifffile stored as colour planes) reaches the user."""
    import warnings

    from napari.utils.notifications import notification_manager

    from napari_sam2.cli import open_in_viewer
    from napari_sam2.io.readers import open_stack

    path = tmp_path / "small.tif"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        tifffile.imwrite(path, np.zeros((4, 20, 30), np.uint16))
    shown = []
    notification_manager.notification_ready.connect(lambda n: shown.append(str(n.message)))
    viewer = make_napari_viewer()
    open_in_viewer(viewer, open_stack(path))
    assert "note: 'small.tif' holds one image whose 4 planes" in capsys.readouterr().err
    assert any("read as 4 channels" in m for m in shown), shown


def test_view_needs_an_input_or_a_sample(capsys):
    from napari_sam2.cli import main

    assert main(["view"]) == 2
    assert "give either INPUT or --sample" in capsys.readouterr().err
    assert main(["view", "missing.tif", "--sample", "cells"]) == 2


# --------------------------------------------------------------------------- outputs are never lost
def run_main(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def error_line(err):
    lines = [line for line in err.splitlines() if line.startswith("napari-sam2: error:")]
    assert len(lines) == 1, err
    return lines[0]


def tree(folder):
    """Every file under a folder with its bytes (to prove nothing changed)."""
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_zarr_folder_not_ours_is_refused_before_the_model_loads(inputs, tmp_path, capsys):
    theirs = tmp_path / "theirs.zarr"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("years of work")
    code, err = run_main(["segment", str(inputs["dir"] / "cells.tif"), "--prompts", str(inputs["session"]),
                          "--out", str(theirs), "--model", "sam2.1-tiny"], capsys)
    assert code == 2
    assert "is a folder that napari-sam2 did not write" in error_line(err)
    assert "loading model" not in err  # refused before anything slow (the model is not even cached)
    assert tree(theirs) == {"notes.txt": b"years of work"}


def test_channels_that_do_not_fit_are_refused_before_the_model_loads(inputs, tmp_path, capsys):
    code, err = run_main(["segment", str(inputs["dir"] / "cells.tif"), "--prompts", str(inputs["session"]),
                          "--out", str(tmp_path / "labels.tif"), "--model", "sam2.1-tiny",
                          "--channels", "1"], capsys)
    assert code == 2
    assert error_line(err).endswith("--channels: channels were given but the stack has no channel axis")
    assert "loading model" not in err  # the model (not even cached here) was never needed


def test_ome_zarr_input_is_never_its_own_output(tmp_path, capsys, inputs):
    img = tmp_path / "ome.zarr"
    g = zarr.open_group(str(img), mode="w", zarr_format=2)
    g.create_array("0", shape=(8, 64, 64), dtype=np.uint16)[:] = inputs["cells"].image
    g.attrs["multiscales"] = [{"version": "0.4", "axes": ["t", "y", "x"], "datasets": [{"path": "0"}]}]
    before = tree(img)
    for out in (img, img / "labels.zarr"):
        code, err = run_main(["segment", str(img / "0"), "--prompts", str(inputs["session"]),
                              "--out", str(out), "--model", "sam2.1-tiny"], capsys)
        assert code == 2
        assert re.search(r"(contains|is|is inside) the input", error_line(err)), err
        assert "loading model" not in err
    assert tree(img) == before


@pytest.mark.parametrize("option, target, message", [
    ("--save-session", "{dir}/cells.tif", r"--save-session '.*cells\.tif' is the input"),
    ("--save-session", "{session}", r"is the session file"),
    ("--save-session", "{dir}/masks/obj5_f2.tif", r"is the mask file"),
    ("--save-session", "{out}",
     r"--out '.*labels\.tif' is --save-session .*: each output needs its own name"),
    ("--stats", "{tmp}/folder.csv", r"--stats '.*folder\.csv' is a folder, but this output is a file"),
    ("--stats", "/proc/stats.csv", r"--stats: cannot write in the folder '/proc'"),
    ("--save-session", "/proc/s.json", r"--save-session: cannot write in the folder '/proc'"),
    ("--out", "{tmp}/folder.tif", r"--out '.*folder\.tif' is a folder, but this output is a file"),
    ("--out", "{tmp}/file.zarr", r"--out '.*file\.zarr' is a file, but this output is a folder"),
])
def test_output_paths_are_checked_before_the_model_loads(inputs, tmp_path, capsys, option, target, message):
    (tmp_path / "folder.csv").mkdir()
    (tmp_path / "folder.tif").mkdir()
    (tmp_path / "file.zarr").write_text("not a folder")
    fill = {"dir": inputs["dir"], "session": inputs["session"], "tmp": tmp_path,
            "out": tmp_path / "labels.tif"}
    before = tree(inputs["dir"])
    argv = ["segment", str(inputs["dir"] / "cells.tif"), "--prompts", str(inputs["session"]),
            "--model", "sam2.1-tiny"]
    if option != "--out":
        argv += ["--out", str(tmp_path / "labels.tif")]
    code, err = run_main(argv + [option, target.format(**fill)], capsys)
    assert code == 2
    assert re.search(message, error_line(err)), err
    assert "loading model" not in err
    assert tree(inputs["dir"]) == before
    assert not (tmp_path / "labels.tif").exists()
    assert (tmp_path / "file.zarr").read_text() == "not a folder"


def test_failed_rerun_keeps_the_earlier_outputs_and_writes_partial_ones(tmp_path, tiny_model_dir, capsys):
    n = 8
    stack = np.random.default_rng(0).random((n, 64, 64), dtype=np.float32) * 100
    stack[5] = np.nan  # a frame SAM 2 cannot see: the run stops with an error there
    tifffile.imwrite(tmp_path / "nan.tif", stack, imagej=True, metadata={"axes": "TYX"})
    session = write_session_json(tmp_path, prompts_1=[{"frame": 0, "points": [[20, 20]], "labels": [1]}])
    earlier = {"out.tif": b"an earlier complete TIFF", "out.csv": b"frame,object_id\n"}
    for name, data in earlier.items():
        (tmp_path / name).write_bytes(data)
    code, err = run_main(["segment", str(tmp_path / "nan.tif"), "--prompts", str(session), "--out",
                          str(tmp_path / "out.tif"), "--stats", str(tmp_path / "out.csv"),
                          "--direction", "forward", "--model", str(tiny_model_dir)], capsys)
    assert code == 2
    assert "frame 5 holds no finite value" in error_line(err)
    assert re.search(r"stopped by an error after 5 of \d+ steps: wrote the 5 frames reached to "
                     r".*out\.partial\.tif .* and their statistics to .*out\.partial\.csv; .*out\.tif and "
                     r".*out\.csv are unchanged", err), err
    for name, data in earlier.items():
        assert (tmp_path / name).read_bytes() == data
    part = tifffile.imread(tmp_path / "out.partial.tif")
    assert part.shape == (n, 64, 64) and part[5:].max() == 0 and part[0].max() >= 1
    with open(tmp_path / "out.partial.csv", newline="") as fh:
        assert {int(r["frame"]) for r in csv.DictReader(fh)} == set(range(5))
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_stats_failure_never_costs_the_labels(tmp_path, tiny_model_dir, capsys, monkeypatch, inputs):
    import errno

    from napari_sam2.io.stats import ObjectStats

    def full(self, path):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ObjectStats, "write_csv", full)
    code, err = run_main(["segment", str(inputs["dir"] / "cells.tif"), "--prompts", str(inputs["session"]),
                          "--out", str(tmp_path / "l.tif"), "--stats", str(tmp_path / "l.csv"),
                          "--model", str(tiny_model_dir)], capsys)
    assert code == 2 and "No space left on device" in error_line(err)
    assert "wrote " + str(tmp_path / "l.tif") + ", but could not write" in err
    check_ids(tifffile.imread(tmp_path / "l.tif"))


class Segmenting:
    """A real ``napari-sam2 segment`` process whose stderr is read as it comes."""

    def __init__(self, args, cwd, prefix=()):
        self.proc = subprocess.Popen([*prefix, *args], cwd=cwd, env=ENV, stderr=subprocess.PIPE, text=True)
        self.seen = []
        self.reader = threading.Thread(
            target=lambda: self.seen.extend(iter(lambda: self.proc.stderr.read(1), "")), daemon=True)
        self.reader.start()

    @property
    def err(self):
        return "".join(self.seen)

    def wait_for(self, pattern, timeout=300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            m = pattern(self.err) if callable(pattern) else re.search(pattern, self.err)
            if m:
                return m
            time.sleep(0.02)
        raise AssertionError(f"never saw {pattern!r}:\n{self.err}")

    def frames_done(self, n, at_least):
        def seen(err):
            m = re.findall(rf"(\d+)/{n}", err)
            return m and int(m[-1]) >= at_least
        self.wait_for(seen)

    def finish(self, timeout=120):
        code = self.proc.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code


# a process that buffers any TIFF output in a temporary file (as outputs over 512 MiB do)
BUFFERED = [sys.executable, "-c", "import sys; import napari_sam2.io.writers as w; "
            "w._MEMORY_BUFFER_BYTES = 0; from napari_sam2.cli import main; sys.exit(main(sys.argv[1:]))"]


@pytest.fixture
def long_input(tmp_path):
    n = 150
    stack = np.random.default_rng(0).integers(0, 255, (n, 64, 64), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "long.tif", stack, imagej=True, metadata={"axes": "TYX"})
    session = write_session_json(tmp_path, prompts_1=[{"frame": 0, "mask": "masks/obj5_f2.tif"}])
    return n, tmp_path / "long.tif", session


def test_sigterm_and_sigint_keep_earlier_outputs(long_input, tmp_path, tiny_model_dir):
    n, stack, session = long_input
    model = ["--model", str(tiny_model_dir)]
    # earlier complete outputs of the same names
    write = [sys.executable, "-m", "napari_sam2.cli"]
    earlier_tif = np.full((n, 64, 64), 7, np.uint16)
    tifffile.imwrite(tmp_path / "old.tif", earlier_tif)
    from napari_sam2.io.writers import write_labels
    write_labels(tmp_path / "old.zarr", earlier_tif)
    zarr_before = tree(tmp_path / "old.zarr")
    tif_before = (tmp_path / "old.tif").read_bytes()
    seg = ["segment", str(stack), "--prompts", str(session), "--direction", "forward", *model]
    term = Segmenting(seg + ["--out", "old.tif"], tmp_path, prefix=BUFFERED)
    intr = Segmenting(write + seg + ["--out", "old.zarr", "--stats", "old.csv"], tmp_path)
    early = Segmenting(write + seg + ["--out", "early.tif"], tmp_path)
    early.wait_for(r"loading model")
    early.proc.send_signal(signal.SIGTERM)  # before segmenting: stops at once, nothing written
    term.frames_done(n, 3)
    assert list(tmp_path.glob(".old.tif.*.buffer"))  # the large-output buffer exists while running
    term.proc.send_signal(signal.SIGTERM)
    intr.frames_done(n, 3)
    intr.proc.send_signal(signal.SIGINT)
    codes = {"term": term.finish(), "intr": intr.finish(), "early": early.finish()}
    assert codes == {"term": 143, "intr": 130, "early": 143}, (term.err, intr.err, early.err)
    for run in (term, intr, early):
        assert "Traceback" not in run.err
    assert "interrupted (SIGTERM) before segmenting started: no labels were written" in early.err
    assert not (tmp_path / "early.tif").exists() and not (tmp_path / "early.partial.tif").exists()

    m = re.search(r"SIGTERM received: stopping after the current frame", term.err)
    assert m, term.err
    m = re.search(rf"interrupted \(SIGTERM\) after \d+ of {n} steps: wrote the (\d+) frames reached to "
                  r"old\.partial\.tif \(frames not reached are 0\); old\.tif is unchanged", term.err)
    assert m, term.err
    done = int(m.group(1))
    assert 3 <= done < n
    assert (tmp_path / "old.tif").read_bytes() == tif_before
    part = tifffile.imread(tmp_path / "old.partial.tif")
    assert part[done:].max() == 0 and (part[0][object5_mask()] >= 1).all()

    m = re.search(rf"interrupted \(Ctrl-C\) after \d+ of {n} steps: wrote the (\d+) frames reached to "
                  r"old\.partial\.zarr .* and their statistics to old\.partial\.csv; old\.zarr is unchanged",
                  intr.err)
    assert m, intr.err
    done = int(m.group(1))
    assert 3 <= done < n
    assert tree(tmp_path / "old.zarr") == zarr_before  # not wiped at start, not touched at the end
    part = zarr.open_group(str(tmp_path / "old.partial.zarr"), mode="r")["0"][:]
    assert part[done:].max() == 0 and (part[:done].max(axis=(1, 2)) >= 1).all()
    assert not (tmp_path / "old.csv").exists()
    # no hidden temporary file, buffer or staging folder is left behind
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_view_without_a_display_says_so(inputs, monkeypatch, capsys):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    code, err = run_main(["view", str(inputs["dir"] / "cells.tif")], capsys)
    assert code == 2
    assert "needs a display" in error_line(err) and "xvfb-run" in err
