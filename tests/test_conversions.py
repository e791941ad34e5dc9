"""Coordinates and intensities: the conventions every part of napari-sam2 shares."""

from __future__ import annotations

import numpy as np
import pytest

from napari_sam2.conversions import (
    box_to_model_corners,
    dtype_limits,
    normalize_intensity,
    points_in_frame,
    robust_limits,
    rowcol_to_model_xy,
)


def test_rowcol_to_model_xy_swaps_and_scales_each_axis():
    xy = rowcol_to_model_xy([[10, 40], [0, 0]], frame_shape=(100, 200), image_size=1024)
    np.testing.assert_allclose(xy, [[40 * 1024 / 200, 10 * 1024 / 100], [0, 0]])
    # an identity size keeps pixel coordinates, swapped to (x, y)
    np.testing.assert_allclose(rowcol_to_model_xy([[3, 7]], (64, 64), 64), [[7, 3]])


def test_box_corners_sorted_and_zero_area_rejected():
    corners = box_to_model_corners([[50, 80], [10, 20]], (100, 100), 100)
    np.testing.assert_allclose(corners, [[20, 10], [80, 50]])
    with pytest.raises(ValueError, match="zero area"):
        box_to_model_corners([[10, 10], [10, 50]], (100, 100), 100)
    with pytest.raises(ValueError, match="finite"):
        box_to_model_corners([[np.nan, 10], [10, 50]], (100, 100), 100)


def test_points_in_frame_uses_pixel_extents():
    inside = points_in_frame([[-0.5, 0], [-0.6, 0], [9.49, 9.49], [9.5, 0], [np.nan, 1]], (10, 10))
    assert inside.tolist() == [True, False, True, False, False]


@pytest.mark.parametrize("dtype, expected", [(np.uint8, (0, 255)), (np.int16, (-32768, 32767)),
                                             (np.float32, (0, 1)), (bool, (0, 1))])
def test_dtype_limits(dtype, expected):
    assert dtype_limits(dtype) == expected


def test_robust_limits_ignores_nan_and_outliers():
    values = np.concatenate([np.linspace(100, 200, 1000), [1e9], [np.nan] * 5])
    lo, hi = robust_limits(values, (1, 99))
    assert 100 <= lo < 102 and 198 < hi <= 200
    per_channel = robust_limits(np.stack([values, values * 2], axis=-1), (1, 99), axis=-1)
    assert per_channel.shape == (2, 2) and per_channel[1, 0] == pytest.approx(2 * lo)
    np.testing.assert_array_equal(robust_limits(np.full(10, 7.0)), [7.0, 8.0])  # flat image
    with pytest.raises(ValueError, match="no finite value"):
        robust_limits([np.nan, np.inf])


def test_normalize_intensity_is_scale_invariant_and_clips():
    a = np.array([[0, 64, 128, 255]], np.uint8)
    ref = normalize_intensity(a, (0, 255))
    np.testing.assert_allclose(normalize_intensity(a.astype(np.float32) / 255, (0, 1)), ref, atol=1e-7)
    np.testing.assert_allclose(normalize_intensity(a.astype(np.uint16) * 257, (0, 65535)), ref, atol=1e-7)
    out = normalize_intensity(np.array([-5.0, np.nan, 10.0, 50.0]), (0, 20))
    np.testing.assert_allclose(out, [0, 0, 0.5, 1])
    per = normalize_intensity(np.array([[[10, 10]]]), [(0, 20), (0, 40)])
    np.testing.assert_allclose(per, [[[0.5, 0.25]]])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_normalize_intensity_sets_nan_to_zero_and_clips_infinities(dtype):
    a = np.array([np.nan, np.inf, -np.inf, -3, 5, 30], dtype)
    np.testing.assert_array_equal(normalize_intensity(a, (0, 10)), [0, 1, 0, 0, 0.5, 1])


@pytest.mark.parametrize("dtype", [bool, np.int8, np.uint8, np.int16, np.uint16])
def test_normalize_intensity_of_narrow_ints_matches_float64(dtype):
    info = np.iinfo(dtype) if dtype is not bool else None
    a = (np.array([0, 1]) if info is None else np.linspace(info.min, info.max, 50)).astype(dtype)
    low, high = (0, 1) if info is None else (info.min / 2, info.max / 2)
    ref = np.clip((a.astype(np.float64) - low) / (high - low), 0, 1)
    np.testing.assert_allclose(normalize_intensity(a, (low, high)), ref, atol=1e-6)


# --------------------------------------------------------------------------- wide dtypes
@pytest.mark.parametrize("dtype, offset, n_levels", [
    (np.int64, 2**40, 256),
    (np.uint64, 2**52, 256),  # float64 holds 53 bits: offsets up to 2**52 keep unit steps
    (np.int32, 2**30, 256),
    (np.uint32, 2**31, 256),
    (np.float64, 1e8, 52),
])
def test_large_offsets_keep_every_grey_level(dtype, offset, n_levels):
    values = (np.arange(n_levels, dtype=np.float64) if dtype == np.float64 else np.arange(n_levels))
    frame = (np.asarray(offset, dtype=dtype) + values.astype(dtype)).reshape(1, -1)
    limits = robust_limits(frame, (0, 100))
    mapped = normalize_intensity(frame, limits)
    assert mapped.dtype == np.float32
    assert len(np.unique(mapped)) == n_levels  # float32 arithmetic gave 1 (2**40) or 9 (1e8) levels
    np.testing.assert_allclose(mapped[0], np.linspace(0, 1, n_levels), atol=1e-6)


def test_wide_dtypes_through_the_frame_source():
    from napari_sam2.engine.frames import FrameSource

    stack = (2**40 + np.arange(64 * 64).reshape(1, 64, 64) % 256).astype(np.int64).repeat(2, axis=0)
    source = FrameSource(stack, 256)
    gray = source.normalized(0)[..., 0]
    assert len(np.unique(gray)) > 200
