"""Per-frame tracking quality of the selected object: a strip, a line of text, jumps.

The strip has one cell per frame (click to jump there); the buttons jump to the previous / next
flagged frame.

Which frames are flagged is decided in :mod:`napari_sam2.quality` (no Qt).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget

from napari_sam2._qt.sections import counted
from napari_sam2.quality import flagged_frames, frame_states

if TYPE_CHECKING:
    from napari_sam2._qt.dock_host import DockHost
else:
    DockHost = object  # the sections' shared state is declared for type checkers only

__all__ = ["QualityStrip", "QualityPanel"]

_COLORS = {
    "none": QColor(70, 70, 70),  # not computed
    "ok": QColor(60, 170, 90),
    "low": QColor(230, 160, 40),  # predicted IoU low, or far below its usual value
    "lost": QColor(210, 50, 50),  # SAM 2 says the object is absent
}


class QualityStrip(QWidget):
    """Draws one coloured cell per frame; emits :attr:`frame_clicked` with the frame index."""

    frame_clicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.quality = np.zeros((0, 2))
        self.iou_threshold = 0.5
        self.current = -1
        self.setMinimumHeight(18)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.setToolTip("Tracking quality per frame: green ok, orange low or dropping predicted IoU, "
                        "red object lost, grey not computed. Click to go to a frame.")

    def set_quality(self, quality, current: int = -1) -> None:
        self.quality = np.asarray(quality, dtype=float).reshape(-1, 2)
        self.current = current
        self.update()

    def state(self, frame: int) -> str:
        return frame_states(self.quality, self.iou_threshold)[frame]

    def frame_at(self, x: float) -> int:
        n = len(self.quality)
        if n == 0:
            return -1
        return int(min(n - 1, max(0, x * n // max(1, self.width()))))

    def paintEvent(self, event):  # noqa: N802 (Qt name)
        n = len(self.quality)
        painter = QPainter(self)
        w, h = self.width(), self.height()
        if n == 0:
            painter.fillRect(0, 0, w, h, _COLORS["none"])
            return
        states = frame_states(self.quality, self.iou_threshold)
        for f in range(n):
            x0, x1 = int(f * w / n), int((f + 1) * w / n)
            painter.fillRect(x0, 0, max(1, x1 - x0), h, _COLORS[states[f]])
        if 0 <= self.current < n:
            x = int((self.current + 0.5) * w / n)
            painter.setPen(QColor(255, 255, 255))
            painter.drawLine(x, 0, x, h)
        painter.end()

    def mousePressEvent(self, event):  # noqa: N802
        frame = self.frame_at(event.position().x() if hasattr(event, "position") else event.x())
        if frame >= 0 and event.button() == Qt.MouseButton.LeftButton:
            self.frame_clicked.emit(frame)


class QualityPanel(DockHost):
    """The Quality section of :class:`~napari_sam2._qt.widget.Sam2Widget`."""

    def _update_quality(self, *_):
        if self.session is None or self.image_layer is None or self.active_id not in self.session.objects:
            self.strip.set_quality(np.zeros((0, 2)))
            self.quality_label.setText("")
            return
        q = self.session.quality(self.active_id)
        try:
            current = self.current_frame()
        except ValueError:
            current = -1
        self.strip.set_quality(q, current)
        flagged = flagged_frames(q, self.strip.iou_threshold)
        done = int(np.count_nonzero(~np.isnan(q[:, 0])))
        more = "…" if len(flagged) > 8 else ""
        listed = f": {', '.join(map(str, flagged[:8]))}{more}" if len(flagged) else ""
        self.quality_label.setText(f"{counted(done, self.unit)} tracked, {len(flagged)} flagged{listed}")

    def _flagged(self):
        if self.session is None or self.active_id not in self.session.objects:
            return np.array([], int)
        return flagged_frames(self.session.quality(self.active_id), self.strip.iou_threshold)

    def next_flagged(self):
        """Go to the next flagged frame after the one on screen."""
        later = [f for f in self._flagged() if f > self.current_frame()]
        if later:
            self.go_to_frame(later[0])

    def previous_flagged(self):
        """Go to the last flagged frame before the one on screen."""
        earlier = [f for f in self._flagged() if f < self.current_frame()]
        if earlier:
            self.go_to_frame(earlier[-1])
