"""Showing label writes without stalling the GUI: only when on screen, only the changed box.

Every refresh of a Labels layer re-slices it, maps every pixel of the frame to its colour and
re-uploads the frame's texture (36 M pixels on a 6000 x 6000 frame); under Xvfb the canvas
renders on the CPU, next to torch. A propagated frame that is not the one on screen needs
nothing at all until the user goes there (napari slices it then), and writes to the frame on
screen are shown at most once per ``min_interval``: those in between are shown together.

A write that says which box it changed is shown by updating that box only: its colours and
its part of the texture, as napari's own brush does (``Labels.data_setitem``). That path uses
napari's private partial refresh, so it lives here alone, is taken only where it is known to
hold (a NumPy label array shown in 2-D, without contours or multiscale) and falls back to
napari's public ``Layer.refresh`` if any of it is missing. Otherwise ``Layer.refresh`` runs
without the parts a label write does not change (the layer's extent and highlight); the
layer-list thumbnail is redrawn for a user's action and at the end of a run, not for every
streamed frame.
"""

from __future__ import annotations

import time

import numpy as np
from qtpy.QtCore import QTimer

__all__ = ["LabelsView", "show_box", "unwrapped"]

_ALL = "all"  # a pending write without a box: the whole frame


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
        # what changed on the frame on screen since the last refresh: None (nothing), _ALL, or
        # one box (a slice per axis of the label array) holding every change
        self._pending: str | tuple | None = None
        self._thumbnail_stale = False
        self._last = 0.0
        self._timer = QTimer()
        self._timer.setSingleShot(True)
        self._timer.timeout.connect(lambda: self.flush(thumbnail=False))
        self.refreshes = 0  # how many times the layer was refreshed (for tests and benchmarks)
        self.box_refreshes = 0  # of which only a changed box was shown

    def set_layer(self, layer) -> None:
        self.layer = layer
        self._pending = None
        self._thumbnail_stale = False

    def written(self, on_screen: bool, now: bool = False, box: tuple | None = None) -> None:
        """The labels changed, on the frame the viewer shows or not.

        ``now``: a user's action (a click, an undo) is shown at once, with its thumbnail;
        otherwise (a propagated frame) within ``min_interval``. ``box``: a slice per axis of
        the label array that holds every pixel the write changed (None: anywhere).
        """
        if self.layer is None:
            return
        if not on_screen:  # napari slices that frame when the user goes there
            return
        if box is None or self._pending == _ALL:
            self._pending = _ALL
        elif self._pending is None:
            self._pending = tuple(box)
        else:
            self._pending = tuple(slice(min(a.start, b.start), max(a.stop, b.stop))
                                  for a, b in zip(self._pending, box))
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
        pending = self._pending
        if pending is None and not (thumbnail and self._thumbnail_stale):
            return
        self._last = time.monotonic()
        self.refreshes += 1
        self._pending = None
        if isinstance(pending, tuple) and show_box(self.layer, pending):
            self.box_refreshes += 1
            if thumbnail:
                self.layer.refresh(thumbnail=True, data_displayed=False, highlight=False, extent=False)
        else:
            self.layer.refresh(thumbnail=thumbnail, data_displayed=pending is not None, highlight=False,
                               extent=False)
        self._thumbnail_stale = not thumbnail


def unwrapped(layer):
    """The layer behind napari's proxy (plugins get proxies of the viewer's layers)."""
    return getattr(layer, "__wrapped__", layer)


def show_box(layer, box: tuple) -> bool:
    """Show the labels within ``box`` (a slice per axis of ``layer.data``) on the canvas.

    The box's colours are computed again and its part of the texture is uploaded, as napari's
    ``Labels.data_setitem`` does after a brush stroke. Returns False, having changed nothing,
    where that cannot be done here (the caller then refreshes the layer).

    Plugins see napari's layers through a proxy that warns about private attributes; this
    function is the one place that uses them, on the layer behind the proxy, and a test fails
    when napari changes them (this function then returns False and the public refresh runs).
    """
    layer = unwrapped(layer)
    try:
        if (layer.multiscale or layer.contour or layer._slice_input.ndisplay != 2
                or not isinstance(layer.data, np.ndarray) or len(box) != layer.data.ndim
                or not layer.loaded or layer._slice.empty):
            return False
        image = layer._slice.image
        displayed = tuple(layer._slice_input.displayed)
        shown = tuple(box[d] for d in displayed)
        # the slice napari shows must be a view of the labels, so that it holds the write
        if image.raw.shape != tuple(layer.data.shape[d] for d in displayed) or not np.may_share_memory(
                image.raw, layer.data):
            return False
        image.view[shown] = layer._raw_to_displayed(image.raw, data_slice=shown)
        layer._accumulate_updated_slice(tuple(box))
        layer._partial_labels_refresh()
        return True
    except (AttributeError, TypeError, ValueError, IndexError):  # another napari: the public refresh
        return False
