"""Showing label writes without stalling the GUI: only when on screen, at a bounded rate.

Every refresh of a Labels layer re-slices it and re-uploads the frame's texture (36 M pixels on
a 6000 x 6000 frame); under Xvfb the canvas renders on the CPU, next to torch. A propagated
frame that is not the one on screen needs nothing at all until the user goes there (napari
slices it then), and writes to the frame on screen are refreshed at most once per
``min_interval``: those in between are shown together. Only napari's public
``Layer.refresh`` is used, without the parts a label write does not change (the layer's extent
and highlight); the layer-list thumbnail is redrawn for a user's action and at the end of a
run, not for every streamed frame.
"""

from __future__ import annotations

import time

from qtpy.QtCore import QTimer

__all__ = ["LabelsView"]


class LabelsView:
    """Refreshes one Labels layer for writes into its data.

    Parameters
    ----------
    min_interval : float
        Seconds between two refreshes at least; later writes wait and are shown together.
    """

    def __init__(self, min_interval: float = 0.2):
        self.layer = None
        self.min_interval = float(min_interval)
        self._pending = False  # the frame on screen changed since the last refresh
        self._thumbnail_stale = False
        self._last = 0.0
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(lambda: self.flush(thumbnail=False))
        self.refreshes = 0  # how many times the layer was refreshed (for tests and benchmarks)

    def set_layer(self, layer) -> None:
        self.layer = layer
        self._pending = self._thumbnail_stale = False

    def written(self, on_screen: bool, now: bool = False) -> None:
        """The labels changed, on the frame the viewer shows or not.

        ``now``: a user's action (a click, an undo) is shown at once, with its thumbnail;
        otherwise (a propagated frame) within ``min_interval``.
        """
        if self.layer is None:
            return
        if not on_screen:  # napari slices that frame when the user goes there
            return
        self._pending = True
        wait = self.min_interval - (time.monotonic() - self._last)
        if now or wait <= 0:
            self.flush(thumbnail=now)
        elif not self._timer.isActive():
            self._timer.start(int(wait * 1000) + 1)

    def flush(self, thumbnail: bool = True) -> None:
        """Show every pending write now (and redraw the thumbnail if asked and out of date)."""
        self._timer.stop()
        if self.layer is None:
            return
        if not self._pending and not (thumbnail and self._thumbnail_stale):
            return
        self._last = time.monotonic()
        self.refreshes += 1
        self.layer.refresh(thumbnail=thumbnail, data_displayed=self._pending, highlight=False, extent=False)
        self._pending = False
        self._thumbnail_stale = not thumbnail
