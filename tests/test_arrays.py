"""The one-frame view that lets single images go through code written for stacks."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.arrays import OneFrameStack


def test_one_frame_stack_adds_a_leading_axis_without_copying():
    image = np.arange(12, dtype=np.uint16).reshape(3, 4)
    stack = OneFrameStack(image)
    assert stack.shape == (1, 3, 4) and stack.ndim == 3 and stack.dtype == np.uint16 and len(stack) == 1
    assert stack[0] is image and stack[-1] is image and stack[np.int64(0)] is image
    np.testing.assert_array_equal(stack[0, 1:, 2], image[1:, 2])
    for bad in (1, -2, slice(None)):
        with pytest.raises(IndexError, match="frame 0 only"):
            stack[bad]
