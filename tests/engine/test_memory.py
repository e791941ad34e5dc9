"""Memory stays flat however long the stack is (the official predictor grows ~12 MiB a frame)."""

from __future__ import annotations

import gc

import numpy as np
import psutil

from napari_sam2 import Sam2Session
from napari_sam2.testing import make_tiny_model


class GeneratedStack:
    """Frames made on request: nothing of the stack is ever held in memory."""

    def __init__(self, n, side=48):
        self.shape, self.dtype, self.ndim = (n, side, side), np.dtype(np.uint8), 3

    def __getitem__(self, t):
        rng = np.random.default_rng(int(t))
        return (rng.random(self.shape[1:]) * 255).astype(np.uint8)


def test_rss_flat_over_a_long_stack():
    model = make_tiny_model(image_size=128)
    n = 800
    session = Sam2Session(model, GeneratedStack(n))
    session.add_points(0, 1, [[20, 20]], [1])
    proc = psutil.Process()
    rss = {}
    for frame, _ in session.propagate("forward"):
        if frame in (150, n - 1):
            gc.collect()
            rss[frame] = proc.memory_info().rss
    growth_mib = (rss[n - 1] - rss[150]) / 2**20
    # kept per frame: the low-resolution mask bit-packed over its box, two scores and a direction flag
    assert growth_mib < 12, f"RSS grew {growth_mib:.1f} MiB over {n - 150} frames"
    obj = session._objects[1]
    assert len(obj.non_cond) <= 2 * session.keep_frames + 1
    assert len(session.cache) <= session.cache.max_frames


def test_the_record_kept_for_every_tracked_frame_is_the_mask_exactly_and_small_for_a_small_object():
    from napari_sam2.engine.objects import MaskBits

    rng = np.random.default_rng(0)
    side = 256  # the mask size of a 1024 px model
    cell = np.zeros((side, side), bool)
    cell[100:109, 37:45] = rng.random((9, 8)) > 0.3
    for mask in (cell, np.zeros((side, side), bool), np.ones((side, side), bool),
                 rng.random((17, 5)) > 0.5):
        record = MaskBits.pack(mask)
        np.testing.assert_array_equal(record.unpack(), mask)
    assert MaskBits.pack(cell).nbytes <= 9, "a cell's box, not the whole 256 x 256 square (8 KiB)"
    assert MaskBits.pack(np.zeros((side, side), bool)).nbytes == 0
