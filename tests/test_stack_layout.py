"""How an image layer's data axes map onto SAM 2 frames (no viewer needed)."""

from __future__ import annotations

import numpy as np

from napari_sam2.stack_layout import StackLayout


def test_split_gives_frame_row_col_with_the_frame_rounded():
    assert StackLayout((5, 40, 60)).split([3.6, 10.0, 20.5]) == (4, 10.0, 20.5)
    assert StackLayout((5, 40, 60)).split([3.4, 10.0, 20.5]) == (3, 10.0, 20.5)
    # (Z, T, Y, X) tracked through T: the video axis is 1, the last two axes are rows and columns
    assert StackLayout((8, 3, 2, 6), video_axis=1).split([7.0, 2.4, 1.0, 5.0]) == (2, 1.0, 5.0)
    # an RGB layer: the channel axis is not a data coordinate of the point
    assert StackLayout((4, 10, 12, 3), rgb=True).split([1.5, 2.0, 3.0]) == (2, 2.0, 3.0)


def test_split_of_a_single_image_is_frame_zero():
    assert StackLayout((40, 60)).split([12.2, 7.0]) == (0, 12.2, 7.0)


def test_leading_world_dimensions_are_ignored():
    # a point from a viewer with more dimensions than the layer keeps the layer's last axes
    frame, row, col = StackLayout((5, 40, 60)).split(np.array([9.0, 2.0, 11.0, 13.0]))
    assert (frame, row, col) == (2, 11.0, 13.0)
