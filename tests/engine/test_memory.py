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
    # kept per frame: a bit-packed low-resolution mask, two scores and a direction flag
    assert growth_mib < 12, f"RSS grew {growth_mib:.1f} MiB over {n - 150} frames"
    obj = session._objects[1]
    assert len(obj.non_cond) <= 2 * session.keep_frames + 1
    assert len(session.cache) <= session.cache.max_frames
