"""Showing label writes without stalling the GUI: only the changed box, only when on screen.

A full ``Labels.refresh()`` re-slices and re-colours the whole frame (36 M pixels on a
6000 x 6000 frame) and re-uploads its texture; under Xvfb the canvas renders on the CPU, next to
torch. A write of a 30 px cell only needs its box recoloured, and a propagated frame that is not
the one on screen needs nothing at all until the user goes there (napari slices it then).
Refreshes are also kept to a bounded rate: boxes written in between are merged and shown
together.
"""

from __future__ import annotations

import time
import warnings

import numpy as np
from qtpy.QtCore import QTimer

from napari_sam2.label_edits import union_box

__all__ = ["LabelsView"]


class LabelsView:
    """Refreshes one Labels layer for writes into its data.

    Parameters
    ----------
    min_interval : float
        Seconds between two refreshes at most once per this interval; later writes wait.
    """

    def __init__(self, min_interval: float = 0.2):
        self.layer = None
        self.min_interval = float(min_interval)
        self._pending: dict[tuple, tuple | None] = {}  # frame index -> box (None: whole frame)
        self._last = 0.0
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(self.flush)
        self.refreshes = 0  # how many times the layer was refreshed (for tests and benchmarks)

    def set_layer(self, layer) -> None:
        self.layer = layer
        self._pending.clear()

    def written(self, index: tuple, box: tuple | None, on_screen: bool, now: bool = False) -> None:
        """``labels[index]`` (one frame) changed inside ``box`` (None: anywhere)."""
        if self.layer is None or not on_screen:
            return
        key = tuple(i if isinstance(i, int) else None for i in index)
        if key in self._pending:
            old = self._pending[key]
            box = None if old is None or box is None else union_box(old, box)
        self._pending[key] = box
        wait = self.min_interval - (time.monotonic() - self._last)
        if now or wait <= 0:
            self.flush()
        elif not self._timer.isActive():
            self._timer.start(int(wait * 1000) + 1)

    def flush(self) -> None:
        """Show every pending write now."""
        self._timer.stop()
        pending, self._pending = self._pending, {}
        if self.layer is None or not pending:
            return
        self._last = time.monotonic()
        self.refreshes += 1
        for key, box in pending.items():
            if box is None or not self._partial(key, box):
                self.layer.refresh()
                return

    def _partial(self, key, box) -> bool:
        """Recolour just ``box`` of the slice on screen (napari's own path for painting)."""
        layer = self.layer
        try:
            with warnings.catch_warnings():
                # napari flags private access from plugins: the fallback below covers its removal
                warnings.simplefilter("ignore", FutureWarning)
                return self._recolour(layer, key, box)
        except (AttributeError, TypeError, ValueError, IndexError):  # another napari: refresh all
            return False

    @staticmethod
    def _recolour(layer, key, box) -> bool:
        if layer.contour != 0 or not isinstance(layer.data, np.ndarray) or layer.multiscale:
            return False
        displayed = list(layer._slice_input.displayed)
        if displayed != [layer.ndim - 2, layer.ndim - 1] or layer._slice_input.ndisplay != 2:
            return False
        rows, cols = slice(box[0], box[1]), slice(box[2], box[3])
        raw = layer._slice.image.raw  # a view of the data for numpy labels
        layer._slice.image.view[rows, cols] = layer.colormap._data_to_texture(raw[rows, cols])
        nd = tuple(slice(i, i + 1) if i is not None else slice(None) for i in key[:-2]) + (rows, cols)
        layer._accumulate_updated_slice(nd)
        layer._partial_labels_refresh()
        return True
