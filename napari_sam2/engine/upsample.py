"""A mask at a large frame's size from SAM 2's low-resolution logits, without upsampling them all.

SAM 2's predictor upsamples an object's 256 x 256 logits bilinearly to the frame's size and keeps
the pixels above 0. On a 6000 x 6000 frame that is 36 M interpolated values per object and
frame (110 ms on a 2-core CPU, half the time of tracking the frame). Most of them need no
arithmetic: a bilinear value is a weighted mean of the 4 logits around it, with weights
>= 0, so where those 4 are all <= 0 the pixel is off and where they are all > 0 it is on,
whatever the weights. Only the cells of the low-resolution grid that the mask's contour
crosses (mixed signs) are interpolated, with the predictor's arithmetic (``torch``'s bilinear,
``align_corners=False``); the result equals its threshold up to the rounding of the weights,
which can only matter for a pixel whose value is within ~1e-5 of 0. Logits whose contour
crosses most cells (noise, e.g. an untrained network's) gain nothing this way: they are left
to torch.

Nothing here imports torch: numpy arrays in, the mask written into a given array.
"""

from __future__ import annotations

import numpy as np

__all__ = ["BIG_FRAME_PIXELS", "MAX_CONTOUR_CELLS", "positive_by_cells"]

#: frames of at least this many pixels are thresholded cell by cell on the CPU (below, torch's
#: interpolation of every pixel is as fast: 5 ms at 1024 x 1024)
BIG_FRAME_PIXELS = 1 << 22

#: above this fraction of contour cells, interpolating every pixel is faster
MAX_CONTOUR_CELLS = 0.2

# a logit this small could round a positive bilinear value to 0: such a cell is interpolated
_TINY = np.float32(1e-30)


def _axis(n_in: int, n_out: int):
    """Source indices and weights of a bilinear resize along one axis (``align_corners=False``).

    Returns ``(i0, i1, w0, w1)``: output index ``k`` reads input ``i0[k]`` with weight ``w0[k]``
    and ``i1[k]`` with ``w1[k]``, as torch computes them (in float32, clamped at the edges).
    """
    one, half = np.float32(1), np.float32(0.5)
    scale = np.float32(n_in) / np.float32(n_out)
    src = np.maximum(scale * (np.arange(n_out, dtype=np.float32) + half) - half, np.float32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    w1 = np.clip(src - i0.astype(np.float32), 0, 1).astype(np.float32)
    return i0, np.minimum(i0 + 1, n_in - 1), (one - w1).astype(np.float32), w1


def positive_by_cells(low: np.ndarray, out: np.ndarray) -> bool:
    """Write ``bilinear_resize(low, out.shape) > 0`` into the bool array ``out``, if worth it.

    Parameters
    ----------
    low : numpy.ndarray
        ``(h, w)`` float32 logits.
    out : numpy.ndarray
        ``(H, W)`` bool, written in place (a view of a torch tensor is fine).

    Returns
    -------
    bool
        Whether ``out`` was written: False (nothing written) when the contour crosses more than
        :data:`MAX_CONTOUR_CELLS` of the cells.
    """
    low = np.ascontiguousarray(low, dtype=np.float32)
    h, w = low.shape
    H, W = out.shape
    r0, r1, wr0, wr1 = _axis(h, H)
    c0, c1, wc0, wc1 = _axis(w, W)
    # the 4 logits a cell (source row a, source column b) reads: (a, b), (a + 1, b), ... clamped
    edge = np.pad(low, ((0, 1), (0, 1)), mode="edge")
    corners = (edge[:-1, :-1], edge[1:, :-1], edge[:-1, 1:], edge[1:, 1:])
    hi = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
    lo = np.minimum(np.minimum(corners[0], corners[1]), np.minimum(corners[2], corners[3]))
    on = lo > _TINY
    mixed = (hi > 0) & ~on
    if np.count_nonzero(mixed) > MAX_CONTOUR_CELLS * mixed.size:
        return False
    starts = np.flatnonzero(np.diff(r0, prepend=-1))  # output rows reading the same source rows
    for s, e in zip(starts, [*starts[1:], H]):
        a, a1 = r0[s], r1[s]
        out[s:e] = on[a, c0]  # every row of the run reads the same cells
        cols = np.flatnonzero(mixed[a, c0])
        if cols.size:  # the contour: interpolate as torch does (columns first, then rows)
            top = low[a, c0[cols]] * wc0[cols] + low[a, c1[cols]] * wc1[cols]
            bottom = low[a1, c0[cols]] * wc0[cols] + low[a1, c1[cols]] * wc1[cols]
            out[s:e, cols] = (top[None, :] * wr0[s:e, None] + bottom[None, :] * wr1[s:e, None]) > 0
    return True
