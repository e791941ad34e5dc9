"""A strip of per-frame tracking quality for one object: one cell per frame, click to jump."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor, QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget

__all__ = ["QualityStrip", "flagged_frames"]

_COLORS = {
    "none": QColor(70, 70, 70),  # not computed
    "ok": QColor(60, 170, 90),
    "low": QColor(230, 160, 40),  # predicted IoU below the threshold
    "lost": QColor(210, 50, 50),  # SAM 2 says the object is absent
}


def flagged_frames(quality: np.ndarray, iou_threshold: float = 0.5) -> np.ndarray:
    """Frames where an object is lost (presence < 0.5) or its predicted IoU is low.

    Parameters
    ----------
    quality : numpy.ndarray, (n_frames, 2)
        Presence and predicted IoU per frame, NaN where not computed
        (:meth:`Sam2Session.quality`).
    iou_threshold : float
        Predicted IoU below which a frame is flagged.

    Returns
    -------
    numpy.ndarray of int
        Sorted frame indices.
    """
    q = np.asarray(quality, dtype=float)
    with np.errstate(invalid="ignore"):
        bad = (q[:, 0] < 0.5) | (q[:, 1] < iou_threshold)
    return np.flatnonzero(bad & ~np.isnan(q[:, 0]))


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
        self.setToolTip("Tracking quality per frame: green ok, orange low predicted IoU, "
                        "red object lost, grey not computed. Click to go to a frame.")

    def set_quality(self, quality, current: int = -1) -> None:
        self.quality = np.asarray(quality, dtype=float).reshape(-1, 2)
        self.current = current
        self.update()

    def state(self, frame: int) -> str:
        p, iou = self.quality[frame]
        if np.isnan(p):
            return "none"
        if p < 0.5:
            return "lost"
        return "low" if iou < self.iou_threshold else "ok"

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
        for f in range(n):
            x0, x1 = int(f * w / n), int((f + 1) * w / n)
            painter.fillRect(x0, 0, max(1, x1 - x0), h, _COLORS[self.state(f)])
        if 0 <= self.current < n:
            x = int((self.current + 0.5) * w / n)
            painter.setPen(QColor(255, 255, 255))
            painter.drawLine(x, 0, x, h)
        painter.end()

    def mousePressEvent(self, event):  # noqa: N802
        frame = self.frame_at(event.position().x() if hasattr(event, "position") else event.x())
        if frame >= 0 and event.button() == Qt.MouseButton.LeftButton:
            self.frame_clicked.emit(frame)
