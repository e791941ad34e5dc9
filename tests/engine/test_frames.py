"""Frames: one contrast for the stack, any dtype, channels, lazy reading."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2 import Sam2Session
from napari_sam2.engine.frames import FrameSource, StackView


def test_same_masks_for_uint8_float_and_uint16(tiny_model, blobs_stack):
    variants = {
        "uint8": blobs_stack,
        "float32/255": blobs_stack.astype(np.float32) / 255,
        "uint16*257": blobs_stack.astype(np.uint16) * 257,
    }
    results = {}
    for name, stack in variants.items():
        s = Sam2Session(tiny_model, stack)
        click = s.add_points(2, 1, [[42, 50]], [1])
        results[name] = [click] + [m[1] for _, m in s.propagate("forward")]
    for name in ("float32/255", "uint16*257"):
        for a, b in zip(results["uint8"], results[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)


def test_one_contrast_for_the_whole_stack():
    # a 12-bit time-lapse that bleaches: per-frame stretching would hide the bleaching
    rng = np.random.default_rng(0)
    stack = np.stack([(rng.random((32, 32)) * 4095 * (1 - 0.1 * t)) for t in range(8)]).astype(np.uint16)
    src = FrameSource(stack, 64)
    lo, hi = src.contrast
    assert 0 <= lo < 100 and 3500 < hi <= 4095, "12-bit data must not be mapped to 16-bit range"
    means = [src.normalized(t).mean() for t in range(8)]
    assert all(a > b for a, b in zip(means, means[1:])), "the same mapping keeps the bleaching visible"
    assert src.normalized(0).max() > 0.9  # not crushed to black


def test_explicit_contrast_and_channels():
    stack = np.zeros((2, 8, 8, 4), np.uint16)
    stack[..., 1] = 1000
    stack[..., 3] = 3000
    src = FrameSource(stack, 64, channels=[3, 1], contrast=[(0, 3000), (0, 2000)])
    x = src.normalized(0)
    assert x.shape == (8, 8, 3)
    np.testing.assert_allclose(x[0, 0], [1.0, 0.5, 0.0])
    gray = FrameSource(stack, 64, channels=1, contrast=(0, 4000)).normalized(0)
    np.testing.assert_allclose(gray[0, 0], [0.25, 0.25, 0.25])
    with pytest.raises(ValueError, match="channel 7 does not exist"):
        FrameSource(stack, 64, channels=[7])
    with pytest.raises(ValueError, match="high > low"):
        FrameSource(stack, 64, channels=1, contrast=(5, 5))


def test_rgb_keeps_colour_balance():
    rgb = np.zeros((1, 4, 4, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[..., 2] = 50
    rgb[0, 0, 0] = 0
    src = FrameSource(rgb, 64, contrast=(0, 255))
    np.testing.assert_allclose(src.normalized(0)[1, 1], [200 / 255, 0, 50 / 255], rtol=1e-6)


def test_frames_are_read_one_at_a_time():
    class Counting:
        def __init__(self):
            self.shape, self.dtype, self.ndim = (500, 16, 16), np.dtype(np.uint8), 3
            self.reads = []

        def __getitem__(self, t):
            self.reads.append(t)
            return np.full((16, 16), t % 256, np.uint8)

    arr = Counting()
    src = FrameSource(arr, 64)
    assert len(arr.reads) <= 16  # contrast sampling only
    arr.reads.clear()
    x = src.model_input(123)
    assert arr.reads == [123] and tuple(x.shape) == (3, 64, 64)


def test_stack_view_picks_axes_lazily():
    data = np.arange(2 * 3 * 4 * 5).reshape(2, 3, 4, 5)  # (T, Z, Y, X)
    view = StackView(data, video_axis=1, spatial_axes=(2, 3), fixed={0: 1})  # z as video at t=1
    assert view.shape == (3, 4, 5)
    np.testing.assert_array_equal(view[2], data[1, 2])
    chan = StackView(np.moveaxis(data, 1, 0), video_axis=1, spatial_axes=(2, 3), channel_axis=0)
    assert chan.shape == (2, 4, 5, 3)
    np.testing.assert_array_equal(chan[1], np.moveaxis(data[1], 0, -1))
    with pytest.raises(ValueError, match="fixed index"):
        StackView(data, video_axis=0, spatial_axes=(2, 3))
