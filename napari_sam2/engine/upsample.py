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

from typing import NamedTuple

import numpy as np

__all__ = ["BIG_FRAME_PIXELS", "MAX_CONTOUR_CELLS", "positive_by_cells", "positive_crop"]

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


class _Cells(NamedTuple):
    """The low-resolution grid's cells as a resize to ``(H, W)`` reads them."""

    rows: tuple  # (i0, i1, w0, w1) per output row
    cols: tuple  # the same per output column
    on: np.ndarray  # (h, w) bool: the cell's 4 logits are all > 0
    mixed: np.ndarray  # (h, w) bool: some > 0, some not (the contour)


def _cells(low: np.ndarray, shape: tuple[int, int]) -> _Cells | None:
    """Classify the cells; None when the contour crosses more than MAX_CONTOUR_CELLS of them."""
    h, w = low.shape
    # the 4 logits a cell (source row a, source column b) reads: (a, b), (a + 1, b), ... clamped
    edge = np.pad(low, ((0, 1), (0, 1)), mode="edge")
    corners = (edge[:-1, :-1], edge[1:, :-1], edge[:-1, 1:], edge[1:, 1:])
    hi = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
    lo = np.minimum(np.minimum(corners[0], corners[1]), np.minimum(corners[2], corners[3]))
    on = lo > _TINY
    mixed = (hi > 0) & ~on
    if np.count_nonzero(mixed) > MAX_CONTOUR_CELLS * mixed.size:
        return None
    return _Cells(_axis(h, shape[0]), _axis(w, shape[1]), on, mixed)


def _fill(low: np.ndarray, cells: _Cells, out: np.ndarray, rows: slice, cols: slice) -> None:
    """Write the window ``[rows, cols]`` of the thresholded resize into ``out`` (its shape)."""
    r0, r1, wr0, wr1 = (a[rows] for a in cells.rows)
    c0, c1, wc0, wc1 = (a[cols] for a in cells.cols)
    starts = np.flatnonzero(np.diff(r0, prepend=-1))  # output rows reading the same source rows
    for s, e in zip(starts, [*starts[1:], len(r0)]):
        a, a1 = r0[s], r1[s]
        out[s:e] = cells.on[a, c0]  # every row of the run reads the same cells
        sel = np.flatnonzero(cells.mixed[a, c0])
        if sel.size:  # the contour: interpolate as torch does (columns first, then rows)
            top = low[a, c0[sel]] * wc0[sel] + low[a, c1[sel]] * wc1[sel]
            bottom = low[a1, c0[sel]] * wc0[sel] + low[a1, c1[sel]] * wc1[sel]
            out[s:e, sel] = (top[None, :] * wr0[s:e, None] + bottom[None, :] * wr1[s:e, None]) > 0


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
    cells = _cells(low, out.shape)
    if cells is None:
        return False
    _fill(low, cells, out, slice(None), slice(None))
    return True


def positive_crop(low: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice, np.ndarray] | None:
    """The box of ``bilinear_resize(low, shape) > 0`` that can hold True pixels, and its mask.

    Outside the box every pixel is off: its 4 logits are all <= 0. The box is computed from the
    cells, so it may hold a margin of off pixels; nothing outside it is computed or allocated (a
    300 px object on a 6000 x 6000 frame costs its box, not the frame).

    Returns
    -------
    (rows, cols, mask) or None
        Slices of the frame and the bool mask of that window (an empty window when nothing can
        be on); None when the contour crosses too many cells (see :func:`positive_by_cells`).
    """
    low = np.ascontiguousarray(low, dtype=np.float32)
    cells = _cells(low, shape)
    if cells is None:
        return None
    may = cells.on | cells.mixed
    rows = np.flatnonzero(may.any(axis=1)[cells.rows[0]])
    cols = np.flatnonzero(may.any(axis=0)[cells.cols[0]])
    if rows.size == 0 or cols.size == 0:
        return slice(0, 0), slice(0, 0), np.zeros((0, 0), bool)
    rs, cs = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
    out = np.empty((rs.stop - rs.start, cs.stop - cs.start), bool)
    _fill(low, cells, out, rs, cs)
    return rs, cs, out
