"""How an image layer's data axes map onto SAM 2 frames (no viewer, no Qt): StackLayout."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.stack_layout import LayerChannels, StackLayout, parse_channels


def test_a_4d_stack_tracks_one_axis_at_a_fixed_index_of_the_other():
    data = np.arange(4 * 3 * 5 * 6).reshape(4, 3, 5, 6)  # (T, Z, Y, X)
    lay = StackLayout(data.shape, video_axis=0, fixed={1: 2})
    assert (lay.ndim, lay.n_frames, lay.other_axes, lay.labels_shape) == (4, 4, [1], data.shape)
    assert lay.index(3) == (3, 2, slice(None), slice(None))
    frames = lay.frames(data)
    np.testing.assert_array_equal(np.asarray(frames[3]), data[3, 2])
    assert lay.split([3.4, 2.0, 1.5, 4.0]) == (3, 1.5, 4.0)
    assert lay.on_this_stack([3, 2, 1, 1]) and not lay.on_this_stack([3, 1, 1, 1])
    with pytest.raises(ValueError, match="outside axis 1"):
        StackLayout(data.shape, fixed={1: 3}).validate()


def test_z_as_the_tracked_axis_and_rgb_and_single_images():
    lay = StackLayout((4, 3, 5, 6), video_axis=1)
    assert lay.n_frames == 3 and lay.index(2) == (0, 2, slice(None), slice(None))
    rgb = StackLayout((7, 5, 6, 3), rgb=True)
    assert rgb.ndim == 3 and rgb.labels_shape == (7, 5, 6) and rgb.n_frames == 7
    single = StackLayout((5, 6))
    assert single.is_single_image and single.n_frames == 1 and single.split([2.0, 3.0]) == (0, 2.0, 3.0)
    with pytest.raises(ValueError, match="video axis"):
        StackLayout((4, 5, 6), video_axis=1).validate()


def test_layer_channels_reads_only_what_is_indexed():
    red, green = np.zeros((3, 4, 5), np.uint8), np.ones((3, 4, 5), np.uint16)
    both = LayerChannels([red, green])
    assert both.shape == (3, 4, 5, 2) and both.dtype == np.uint16 and len(both) == 3
    np.testing.assert_array_equal(both[1][..., 1], green[1])
    with pytest.raises(ValueError, match="same shape"):
        LayerChannels([red, green[:, :2]])
    assert parse_channels(" 0, 2") == [0, 2] and parse_channels("") is None
    with pytest.raises(ValueError, match="one to three"):
        parse_channels("0,1,2,3")


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
