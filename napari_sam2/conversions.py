"""Coordinate and intensity conversions shared by the engine, the widget and the command line.

Everything that turns one convention into another lives here, so it is written and tested once:

* **Coordinates.** napari and numpy index pixels as ``(row, col)`` with pixel centres on integers;
  SAM 2's prompt encoder takes ``(x, y)`` in the model's square input (``image_size`` pixels on a
  side) with the same pixel-centre convention (it adds 0.5 itself). A frame of ``H x W`` pixels is
  stretched to ``S x S`` without padding, exactly as SAM 2's video predictor does. (Which data
  axes of a napari layer are the frame, the rows and the columns is the stack layout's business:
  :meth:`napari_sam2.stack_layout.StackLayout.split`.)
* **Intensities.** Scientific stacks come as uint8, uint16 (often 12-bit), signed integers or
  floats with NaN. SAM 2 was trained on 8-bit RGB divided by 255. One linear mapping,
  ``(value - low) / (high - low)`` clipped to [0, 1], is chosen for the *whole stack* and applied
  identically to every frame: no per-frame flicker, no crushing of 12-bit data.

Nothing here imports torch, Qt or napari.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "MAX_OBJECT_ID",
    "rowcol_to_model_xy",
    "box_to_model_corners",
    "points_in_frame",
    "normalize_intensity",
    "robust_limits",
    "dtype_limits",
]

#: Percentiles used for the default contrast: robust to hot pixels and dead borders.
DEFAULT_PERCENTILES = (0.5, 99.5)
#: The largest object id (label value) the engine and the session files accept: a 32-bit label.
MAX_OBJECT_ID = 2**32 - 1


# --------------------------------------------------------------------------- coordinates
def rowcol_to_model_xy(points, frame_shape: tuple[int, int], image_size: int) -> np.ndarray:
    """Convert ``(row, col)`` frame pixels to SAM 2's ``(x, y)`` model pixels.

    Parameters
    ----------
    points : array-like, shape (N, 2)
        ``(row, col)`` coordinates in the frame, pixel centres on integers (napari's convention).
    frame_shape : (int, int)
        ``(H, W)`` of the frame.
    image_size : int
        The model's square input size ``S``.

    Returns
    -------
    numpy.ndarray, shape (N, 2), float32
        ``(x, y)`` = ``(col * S / W, row * S / H)``, the scaling SAM 2's predictor applies to
        user clicks.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = frame_shape
    xy = np.empty_like(pts)
    xy[:, 0] = pts[:, 1] * (image_size / w)
    xy[:, 1] = pts[:, 0] * (image_size / h)
    return xy.astype(np.float32)


def box_to_model_corners(box, frame_shape: tuple[int, int], image_size: int) -> np.ndarray:
    """Convert a box ``[[row0, col0], [row1, col1]]`` to SAM 2's two corner points.

    The corners may be given in any order; the result is ``[[x_min, y_min], [x_max, y_max]]``
    (SAM 2 labels them 2 and 3).

    Raises
    ------
    ValueError
        If the box is not 2 x 2, is not finite, or has zero area.
    """
    b = np.asarray(box, dtype=np.float64)
    if b.size != 4:
        raise ValueError(
            f"a box is two corners [[row0, col0], [row1, col1]]; got an array of shape {b.shape}"
        )
    b = b.reshape(2, 2)
    if not np.isfinite(b).all():
        raise ValueError(f"box corners must be finite numbers, got {b.tolist()}")
    lo, hi = b.min(axis=0), b.max(axis=0)
    if np.any(hi - lo <= 0):
        raise ValueError(
            f"box {b.tolist()} has zero area: draw a box with a height and a width of at least one pixel"
        )
    return rowcol_to_model_xy(np.stack([lo, hi]), frame_shape, image_size)


def points_in_frame(points, frame_shape: tuple[int, int]) -> np.ndarray:
    """Boolean (N,) telling which ``(row, col)`` points fall inside the frame.

    A pixel ``i`` covers ``[i - 0.5, i + 0.5)``, so the frame spans ``[-0.5, H - 0.5)`` rows.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    h, w = frame_shape
    return (
        np.isfinite(pts).all(axis=1)
        & (pts[:, 0] >= -0.5)
        & (pts[:, 0] < h - 0.5)
        & (pts[:, 1] >= -0.5)
        & (pts[:, 1] < w - 0.5)
    )


# --------------------------------------------------------------------------- intensities
def dtype_limits(dtype) -> tuple[float, float]:
    """The full range of an integer dtype, or (0, 1) for floats and booleans."""
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        info = np.iinfo(dtype)
        return float(info.min), float(info.max)
    return 0.0, 1.0


def robust_limits(samples, percentiles: tuple[float, float] = DEFAULT_PERCENTILES, axis=None):
    """Contrast limits from percentiles of sample values, ignoring NaN and infinities.

    Parameters
    ----------
    samples : array-like
        Pixel values (any shape). With ``axis=-1`` the last axis is channels and limits are
        computed per channel.
    percentiles : (float, float)
        Lower and upper percentile.
    axis : None or -1
        ``None``: one pair of limits for all values. ``-1``: one pair per channel.

    Returns
    -------
    numpy.ndarray
        Shape (2,) for ``axis=None`` or (C, 2) for ``axis=-1``, float64, with ``high > low``
        always (a flat image gets ``high = low + 1``).

    Raises
    ------
    ValueError
        If there is no finite sample value.
    """
    a = np.asarray(samples, dtype=np.float64)
    if axis is None:
        a = a.reshape(-1, 1)
    else:
        a = a.reshape(-1, a.shape[-1])
    a = np.where(np.isfinite(a), a, np.nan)
    if np.isnan(a).all(axis=0).any():
        raise ValueError(
            "the sampled frames contain no finite value (all NaN or infinite): "
            "give contrast limits explicitly or check the data"
        )
    lim = np.nanpercentile(a, percentiles, axis=0).T  # (C, 2)
    flat = lim[:, 1] <= lim[:, 0]
    lim[flat, 1] = lim[flat, 0] + 1.0
    return lim[0] if axis is None else lim


def _needs_float64(dtype) -> bool:
    """Whether a dtype holds values float32 cannot represent exactly (32/64-bit ints, float64)."""
    dtype = np.dtype(dtype)
    return (dtype.kind in "ui" and dtype.itemsize >= 4) or (dtype.kind == "f" and dtype.itemsize > 4)


def normalize_intensity(frame, limits, out: np.ndarray | None = None) -> np.ndarray:
    """Map values linearly so that ``limits`` go to 0 and 1, clip, and set NaN to 0.

    Parameters
    ----------
    frame : array-like, shape (..., C) or (...)
        Pixel values of any numeric dtype.
    limits : array-like, shape (2,) or (C, 2)
        ``(low, high)`` for all channels, or one pair per channel (last axis of ``frame``).
    out : numpy.ndarray, optional
        float32 output buffer of the frame's shape.

    Returns
    -------
    numpy.ndarray, float32, values in [0, 1]

    Notes
    -----
    Values that float32 cannot hold exactly (32- and 64-bit integers, float64) are mapped in
    float64 and rounded to float32 once, after the offset is removed, so a stack of
    ``2**40 + (0..255)`` keeps its 256 grey levels.
    """
    lim = np.asarray(limits, dtype=np.float64)
    low, high = (lim[0], lim[1]) if lim.ndim == 1 else (lim[:, 0], lim[:, 1])
    scale = 1.0 / (high - low)
    frame = np.asarray(frame)
    if out is None:
        out = np.empty(frame.shape, np.float32)
    if _needs_float64(frame.dtype):
        # float32 has 24 bits of mantissa: 2**40 + (0..255) or 1e8 + x would collapse to one or a
        # few grey levels before the offset is taken away; subtract in float64, then round once
        np.multiply(frame.astype(np.float64) - low, scale, out=out, casting="same_kind")
    else:
        # float64 constants, float32 arithmetic: exact for values of up to 24 bits; the cast
        # happens inside the subtraction, without a float32 copy of the frame first
        np.subtract(frame, np.float32(low) if np.ndim(low) == 0 else low.astype(np.float32), out=out,
                    dtype=np.float32)
        np.multiply(out, np.float32(scale) if np.ndim(scale) == 0 else scale.astype(np.float32), out=out)
    if frame.dtype.kind in "fc":
        # fmax ignores NaN, so NaN becomes 0 in the same pass that clips below 0 (np.nan_to_num
        # scans the frame three more times: 200 ms on a 6000 x 6000 frame)
        np.fmax(out, np.float32(0.0), out=out)
        np.fmin(out, np.float32(1.0), out=out)
    else:  # integers and booleans hold no NaN
        np.clip(out, 0.0, 1.0, out=out)
    return out
