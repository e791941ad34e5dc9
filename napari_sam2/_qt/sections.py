"""Small Qt pieces of the dock: folding sections, the status line and the progress line."""

from __future__ import annotations

import time

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QLabel, QProgressBar, QSizePolicy, QToolButton, QVBoxLayout, QWidget

from napari_sam2.annotator import ProgressClock

__all__ = ["Section", "StatusLine", "ProgressLine", "counted", "listed"]


def counted(n: int, plural: str = "objects") -> str:
    """``"1 object"``, ``"2 objects"``, ``"1 frame"``: counts in the status line."""
    return f"{n} {plural[:-1] if n == 1 else plural}"


def listed(names: list[str]) -> str:
    """``"'a'"``, ``"'a' and 'b'"``, ``"'a', 'b' and 'c'"``: names in the status line."""
    quoted = [f"'{name}'" for name in names]
    return ", ".join(quoted[:-1]) + " and " + quoted[-1] if len(quoted) > 1 else "".join(quoted)


class Section(QWidget):
    """A titled part of the dock whose content folds away (click the title)."""

    def __init__(self, title: str, parent=None, expanded: bool = True):
        super().__init__(parent)
        self.toggle = QToolButton()
        self.toggle.setText(title)
        self.toggle.setCheckable(True)
        self.toggle.setChecked(expanded)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setStyleSheet("QToolButton { border: none; font-weight: bold; }")
        self.toggle.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.toggle.toggled.connect(self.set_expanded)
        self.body = QWidget()
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 2, 0, 2)
        col.setSpacing(2)
        col.addWidget(self.toggle)
        col.addWidget(self.body)
        self.set_expanded(expanded)

    @property
    def expanded(self) -> bool:
        """Whether the section's content shows."""
        return self.toggle.isChecked()

    def set_expanded(self, on: bool) -> None:
        """Show (``on``) or fold away the section's content; the title's arrow follows."""
        self.toggle.blockSignals(True)
        self.toggle.setChecked(bool(on))
        self.toggle.blockSignals(False)
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if on else Qt.ArrowType.RightArrow)
        self.body.setVisible(bool(on))


class StatusLine(QLabel):
    """The dock's last word: the last error in full (with its fix), or what just happened.

    It stays until the next message, unlike napari's notifications, which fade.
    """

    def __init__(self, parent=None):
        super().__init__("", parent)
        self.setWordWrap(True)
        self.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Minimum)
        self.is_error = False

    def say(self, text: str) -> None:
        """Show ``text`` as what just happened."""
        self.is_error = False
        self.setStyleSheet("")
        self.setText(text)

    def error(self, text: str) -> None:
        """Show ``text`` as an error (in red)."""
        self.is_error = True
        self.setStyleSheet("color: #ff7f7f;")
        self.setText(text)


class ProgressLine(QProgressBar):
    """A progress bar that shows frames done, the rate and the time left.

    It is redrawn at most every ``min_interval`` seconds (and for the last frame): each repaint
    of napari's window composites the whole window, on the CPU under a software renderer, inside
    napari's Python event handler, holding Python's global lock that the worker computing the
    next frame needs between two torch operations. A repaint per frame slowed propagation in the
    dock to 2-2.5x the API's time; :attr:`done` is always exact.
    """

    def __init__(self, parent=None, min_interval: float = 0.25):
        super().__init__(parent)
        self.unit = "frames"
        self.clock: ProgressClock | None = None
        self.min_interval = float(min_interval)
        self._shown_at = 0.0
        self.setValue(0)
        self.setFormat("")
        self.setTextVisible(True)

    def start(self, total: int, unit: str = "frames") -> None:
        """Start counting ``total`` frames (or slices: ``unit``) from zero."""
        self.unit = unit
        self.clock = ProgressClock(total)
        self.setRange(0, max(1, total))
        self.show_count()

    def step(self, n: int = 1) -> None:
        """Count ``n`` more frames done; the bar shows them within ``min_interval``."""
        if self.clock is None:
            self.start(self.maximum())
        clock = self.clock
        assert clock is not None  # start() made it
        clock.step(n)
        if clock.done >= clock.total or time.monotonic() - self._shown_at >= self.min_interval:
            self.show_count()

    def show_count(self) -> None:
        """Show the frames done, the rate and the time left now."""
        self._shown_at = time.monotonic()
        if self.clock is None:
            return
        self.setValue(self.clock.done)
        self.setFormat(self.clock.text(self.unit))

    @property
    def done(self) -> int:
        """How many frames are done."""
        return 0 if self.clock is None else self.clock.done
