"""The synthetic samples are what they claim: 12-bit cells that move, divide and blink; a CT volume."""

from __future__ import annotations

import numpy as np

from napari_sam2.samples import (
    cells_timelapse_sample,
    make_cells_timelapse,
    make_organ_volume,
    organ_volume_sample,
)


def test_cells_are_12_bit_and_move_divide_blink():
    cells = make_cells_timelapse(n_frames=40, shape=(128, 128), n_cells=8, seed=0)
    assert cells.image.dtype == np.uint16 and cells.image.shape == (40, 128, 128)
    assert 1000 < cells.image.max() <= 4095, "a 12-bit range, not 8-bit and not 16-bit"
    assert cells.labels.shape == cells.image.shape
    assert cells.divisions, "at least one cell divides"
    frame, parent, d1, d2 = cells.divisions[0]
    assert (cells.labels[frame] == d1).any() and (cells.labels[frame] == d2).any()
    assert not (cells.labels[frame] == parent).any()
    assert cells.blinks, "at least one cell blinks"
    cell, dark0, _ = cells.blinks[0]
    inside = cells.labels[dark0] == cell
    assert inside.any()
    # dark while blinking: the cell's pixels are much dimmer than when it is lit
    lit = [t for t in range(40) if (cells.labels[t] == cell).any() and not (dark0 <= t <= cells.blinks[0][2])]
    assert cells.image[dark0][inside].mean() < 0.7 * cells.image[lit[0]][cells.labels[lit[0]] == cell].mean()
    ids = [i for i in np.unique(cells.labels[0]) if i]
    c0 = np.argwhere(cells.labels[0] == ids[0]).mean(axis=0)
    c9 = np.argwhere(cells.labels[9] == ids[0]).mean(axis=0)
    assert np.hypot(*(c9 - c0)) > 1, "cells move"
    again = make_cells_timelapse(n_frames=40, shape=(128, 128), n_cells=8, seed=0)
    np.testing.assert_array_equal(again.image, cells.image)


def test_volume_and_napari_sample_tuples():
    vol = make_organ_volume(shape=(16, 48, 48))
    assert vol.image.dtype == np.int16 and set(np.unique(vol.labels)) >= {0, 1, 3}
    assert vol.spacing[0] > vol.spacing[1], "anisotropic voxels"
    for sample in (cells_timelapse_sample(), organ_volume_sample()):
        kinds = [kind for _, _, kind in sample]
        assert kinds[0] == "image" and "labels" in kinds


def test_volume_contrast_a_lesion_is_subtle_and_bone_bright():
    vol = make_organ_volume(shape=(24, 64, 64), seed=1)
    assert set(np.unique(vol.labels)) == {0, 1, 2, 3}
    assert vol.image[0, 0, 0] == -1000, "air outside the body"
    organ, lesion, bone = (vol.image[vol.labels == k].mean() for k in (1, 2, 3))
    assert 20 < organ - lesion < 60, "a low-contrast lesion"
    assert bone > 500


def test_bad_sample_arguments_are_clear():
    import pytest

    with pytest.raises(ValueError, match="n_frames"):
        make_cells_timelapse(n_frames=0)
    with pytest.raises(ValueError, match="shape"):
        make_organ_volume(shape=(4, 64, 64))
