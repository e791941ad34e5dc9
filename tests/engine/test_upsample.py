"""Masks of large frames thresholded cell by cell equal torch's bilinear upsampling and threshold."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_sam2.engine.tracking import masks_into
from napari_sam2.engine.upsample import BIG_FRAME_PIXELS, positive_by_cells, positive_crop


def _reference(low, shape):
    x = torch.from_numpy(low)[None, None]
    return (F.interpolate(x, size=shape, mode="bilinear", align_corners=False)[0, 0] > 0).numpy()


def _count_calls(monkeypatch, name):
    """Count the tracker's calls of one of the upsampling functions (a list that grows)."""
    import napari_sam2.engine.tracking as tracking

    calls: list = []
    real = getattr(tracking, name)

    def counted(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(tracking, name, counted)
    return calls


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
    calls = _count_calls(monkeypatch, "positive_by_cells")
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


@pytest.mark.parametrize("shape, low_shape, seed", [
    ((2100, 2100), (256, 256), 0), ((1500, 3001), (256, 256), 1), ((200, 150), (256, 256), 2)])
def test_the_crop_holds_every_on_pixel_and_equals_the_full_interpolation(shape, low_shape, seed):
    rng = np.random.default_rng(seed)  # one object, most of the frame off
    yy, xx = np.mgrid[:low_shape[0], :low_shape[1]]
    cy, cx = rng.integers(40, 200, 2)
    low = (6 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * 25.0 ** 2)) - 3).astype(np.float32)
    low += _logits(*low_shape, seed) * 0.1  # a ragged contour
    low[np.abs(low) < 0.02] = 0.0
    rows, cols, crop = positive_crop(low, shape)
    full = np.zeros(shape, bool)
    full[rows, cols] = crop
    ref = _reference(low, shape)
    assert ref.any() and crop.size < ref.size
    np.testing.assert_array_equal(full, ref)


def test_a_crop_of_nothing_and_of_everything():
    rows, cols, crop = positive_crop(np.full((64, 64), -3, np.float32), (1000, 1000))
    assert crop.size == 0
    rows, cols, crop = positive_crop(np.full((64, 64), 3, np.float32), (1000, 1000))
    assert (rows, cols) == (slice(0, 1000), slice(0, 1000)) and crop.all()


def test_session_labels_of_a_large_frame_compose_crops_as_the_masks_would(tiny_model, monkeypatch):
    import napari_sam2.engine.upsample as upsample
    from napari_sam2 import Sam2Session

    monkeypatch.setattr(upsample, "MAX_CONTOUR_CELLS", 1.0)  # the random network's logits are noise
    crops = _count_calls(monkeypatch, "positive_crop")
    side = int(np.ceil(np.sqrt(BIG_FRAME_PIXELS)))
    yy, xx = np.mgrid[:side, :side]
    frame = (((yy - 600) ** 2 + (xx - 700) ** 2 < 300 ** 2) * 180 + 30).astype(np.uint8)
    stack = np.stack([frame, np.roll(frame, 40, axis=1)])
    session = Sam2Session(tiny_model, stack)
    session.add_points(0, 3, [(600, 700)], [1])
    session.add_points(0, 9, [(1500, 1500)], [1])
    for f, masks in session.propagate():
        for obj_id, box in masks.boxes.items():  # tracked masks: built from their crops
            np.testing.assert_array_equal(masks[obj_id], session.mask(f, obj_id))
            inside = np.zeros(masks[obj_id].shape, bool)
            inside[box[0]:box[1], box[2]:box[3]] = True
            assert not (masks[obj_id] & ~inside).any(), "the box holds every pixel of the mask"
        labels = session.labels(f)
        expected = np.zeros(labels.shape, labels.dtype)
        for obj_id in (3, 9):
            expected[session.mask(f, obj_id)] = obj_id
        np.testing.assert_array_equal(labels, expected)
    assert crops, "tracked frames are composed from crops"
    assert any(masks.boxes for _, masks in session.propagate()), "the engine yields boxes"
