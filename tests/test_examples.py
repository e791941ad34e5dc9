"""Every script in examples/ runs to the end with a small random model."""

from __future__ import annotations

import csv
import json
import runpy
import sys
from pathlib import Path

import numpy as np
import tifffile

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

SMALL = {
    "segment_cells_api.py": ["--frames", "5", "--size", "64", "--cells", "2"],
    "segment_volume_cli.py": ["--shape", "8", "64", "64"],
}


def test_every_example_is_tested():
    assert {p.name for p in EXAMPLES.glob("*.py")} == set(SMALL)


def run_example(name, argv, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name), *argv])
    return runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_cells_api_example(tmp_path, tiny_model_dir, monkeypatch, capsys):
    run_example("segment_cells_api.py", ["--model", str(tiny_model_dir), "--out-dir", str(tmp_path),
                                         *SMALL["segment_cells_api.py"]], monkeypatch)
    assert "Dice with the ground truth" in capsys.readouterr().out
    labels = tifffile.imread(tmp_path / "cells_labels.tif")
    assert labels.shape == (5, 64, 64)
    with open(tmp_path / "cells_stats.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 5 * 2
    session = json.loads((tmp_path / "cells_session.json").read_text())
    assert len(session["objects"]) == 2


def test_volume_cli_example(tmp_path, tiny_model_dir, monkeypatch, capsys):
    monkeypatch.setenv("NAPARI_SAM2_MODEL", str(tiny_model_dir))  # the env var route
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    run_example("segment_volume_cli.py", ["--out-dir", str(tmp_path), *SMALL["segment_volume_cli.py"]],
                monkeypatch)
    printed = capsys.readouterr().out
    assert "organ:" in printed and "bone:" in printed
    with tifffile.TiffFile(tmp_path / "ct_labels.tif") as tif:
        assert tif.series[0].axes == "ZYX" and tif.imagej_metadata["spacing"] == 2.5
        labels = tif.asarray()
    assert labels.shape == (8, 64, 64)
    # the bone's mask prompt is kept exactly on its slice
    truth = tifffile.imread(tmp_path / "ct_masks" / "bone.tif") > 0
    assert (labels[4][truth] == 3).all()
    assert np.isin(np.unique(labels), [0, 1, 3]).all()
