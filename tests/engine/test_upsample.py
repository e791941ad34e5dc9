"""Masks of large frames thresholded cell by cell equal torch's bilinear upsampling and threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam2.engine.tracking import masks_into
from napari_sam2.engine.upsample import BIG_FRAME_PIXELS, positive_by_cells


def _reference(low, shape):
    x = torch.from_numpy(low)[None, None]
    return (F.interpolate(x, size=shape, mode="bilinear", align_corners=False)[0, 0] > 0).numpy()


def _logits(h, w, seed):
    """Smooth blobs like a mask decoder's, with exact zeros and tiny values on the contour."""
    g = torch.Generator().manual_seed(seed)
    low = F.interpolate(torch.randn(1, 1, 12, 12, generator=g), size=(h, w), mode="bilinear")[0, 0] * 4
    low = low.numpy().astype(np.float32)
    low[np.abs(low) < 0.05] = 0.0
    low[np.abs(low - 0.3) < 0.01] = 1e-38
    return low


@pytest.mark.parametrize("shape, low_shape", [
    ((2100, 2100), (256, 256)),  # upscaling, not a multiple
    ((1500, 3001), (256, 256)),  # two different scales
    ((777, 333), (64, 128)),
    ((200, 150), (256, 256)),  # downscaling
    ((256, 256), (256, 256)),
])
def test_cell_by_cell_equals_the_full_interpolation(shape, low_shape):
    for seed in range(3):
        low = _logits(*low_shape, seed)
        out = np.zeros(shape, bool)
        assert positive_by_cells(low, out)
        ref = _reference(low, shape)
        assert 0 < ref.sum() < ref.size, "the case must have a contour"
        np.testing.assert_array_equal(out, ref)


def test_masks_into_takes_the_cell_path_for_large_frames_on_the_cpu(monkeypatch):
    import napari_sam2.engine.tracking as tracking

    calls = []

    def counted(low, o):
        calls.append(1)
        return positive_by_cells(low, o)

    monkeypatch.setattr(tracking, "positive_by_cells", counted)
    side = int(np.ceil(np.sqrt(BIG_FRAME_PIXELS)))
    lows = [torch.from_numpy(_logits(256, 256, s)).to(torch.bfloat16)[None] for s in (4, 5)]
    out = torch.zeros((2, side, side), dtype=torch.bool)
    masks_into(lows, out)
    assert len(calls) == 2
    for low, o in zip(lows, out):
        np.testing.assert_array_equal(o.numpy(), _reference(low[0].float().numpy(), (side, side)))


def test_noisy_logits_are_left_to_torch_and_still_right():
    low = np.random.default_rng(0).standard_normal((256, 256)).astype(np.float32)  # an untrained net's
    side = int(np.ceil(np.sqrt(BIG_FRAME_PIXELS)))
    assert not positive_by_cells(low, np.zeros((side, side), bool))
    out = torch.zeros((1, side, side), dtype=torch.bool)
    masks_into([torch.from_numpy(low)], out)
    np.testing.assert_array_equal(out[0].numpy(), _reference(low, (side, side)))
