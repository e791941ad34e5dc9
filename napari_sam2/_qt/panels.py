"""The dock's sections, built: widgets and their layout only (no behaviour).

:func:`build_dock` lays the sections out in a scroll area and returns the named widgets; the
dock (:mod:`napari_sam2._qt.widget`) connects them. Sizes are chosen for a 350 px wide dock that
still works on a 1366 x 768 screen: combo boxes do not grow with long layer names, lists are
short, and rarely changed settings sit under "more".
"""

from __future__ import annotations

from typing import TypeVar

from qtpy.QtCore import QCoreApplication, QEvent, QObject, Qt
from qtpy.QtWidgets import (
    QAbstractItemView,
    QAbstractSpinBox,
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QPushButton,
    QScrollArea,
    QSizePolicy,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_sam2._qt.quality_strip import QualityStrip
from napari_sam2._qt.sections import ProgressLine, Section, StatusLine

__all__ = ["build_dock", "DockWidgets", "MODEL_CHOICES", "DOCK_WIDTH", "WheelScrollsDock"]

#: The models offered by name (``napari_sam2.engine.models.MODEL_IDS``, which imports torch), each
#: with what a user should know before a download.
MODEL_CHOICES = {
    "sam2.1-tiny": "SAM 2.1 tiny (facebook/sam2.1-hiera-tiny, 156 MB download): the fastest SAM 2.1",
    "sam2.1-small": "SAM 2.1 small (facebook/sam2.1-hiera-small, 185 MB download)",
    "sam2.1-base-plus": "SAM 2.1 base-plus (facebook/sam2.1-hiera-base-plus, 324 MB download)",
    "sam2.1-large": "SAM 2.1 large (facebook/sam2.1-hiera-large, 898 MB download): the most accurate "
                    "SAM 2.1, several times slower than tiny",
    "sam3": "SAM 3's tracker (facebook/sam3, 3.4 GB download, 1008 px input): gated; request "
            "access on the model page, then run: hf auth login",
    "edgetam": "EdgeTAM (yonigozlan/EdgeTAM-hf, 56 MB download): SAM 2's tracker with a small "
               "encoder, built for speed on small devices; needs: pip install 'napari-sam2[edgetam]'",
}
DOCK_WIDTH = 350


class DockWidgets:
    """The dock's widgets by name, as :func:`build_dock` makes them (the dock connects them)."""

    scroll_area: QScrollArea
    image_section: Section
    image_combo: QComboBox
    axis_spin: QSpinBox
    axis_kind: QComboBox
    fixed_label: QLabel
    fixed_spin: QSpinBox
    follow_check: QCheckBox
    contrast_label: QLabel
    reread_button: QPushButton
    channels_section: Section
    channels_edit: QLineEdit
    green_combo: QComboBox
    blue_combo: QComboBox
    model_section: Section
    model_combo: QComboBox
    device_combo: QComboBox
    precision_combo: QComboBox
    model_path: QLineEdit
    browse_button: QPushButton
    load_button: QPushButton
    model_status: QLabel
    objects_section: Section
    labels_combo: QComboBox
    object_list: QListWidget
    new_button: QPushButton
    delete_button: QPushButton
    positive_check: QCheckBox
    mask_source: QComboBox
    mask_id: QSpinBox
    mask_button: QPushButton
    seed_button: QPushButton
    find_button: QPushButton
    find_section: Section
    find_grid: QSpinBox
    find_zoom: QSpinBox
    find_min_area: QSpinBox
    propagate_section: Section
    direction_combo: QComboBox
    selected_only: QCheckBox
    range_section: Section
    start_spin: QSpinBox
    stop_spin: QSpinBox
    propagate_button: QPushButton
    cancel_button: QPushButton
    progress: ProgressLine
    undo_button: QPushButton
    revert_button: QPushButton
    quality_section: Section
    strip: QualityStrip
    quality_label: QLabel
    prev_flagged_button: QPushButton
    next_flagged_button: QPushButton
    files_section: Section
    save_button: QPushButton
    load_session_button: QPushButton
    export_button: QPushButton
    status: StatusLine
    wheel_guard: WheelScrollsDock


_W = TypeVar("_W", bound=QWidget)


def _tip(widget: _W, tip: str) -> _W:
    """Give ``widget`` its tooltip and return it (a widget built in one expression)."""
    widget.setToolTip(tip)
    return widget


def _check(text: str, tip: str, checked: bool = True) -> QCheckBox:
    """A check box with its tooltip, checked by default."""
    box = _tip(QCheckBox(text), tip)
    box.setChecked(checked)
    return box


def _spin(low: int, high: int, tip: str = "") -> QSpinBox:
    """A spin box for integers from ``low`` to ``high`` with its tooltip."""
    spin = _tip(QSpinBox(), tip)
    spin.setRange(low, high)
    return spin


def _wrapped(text: str) -> QLabel:
    """A label whose text wraps at the dock's width."""
    label = QLabel(text)
    label.setWordWrap(True)
    return label


class NamedCombo(QComboBox):
    """A combo box whose tooltip starts with the whole current choice.

    A narrow combo cuts long layer names ("cells grou"); the choices are often refilled with
    signals blocked, so the tooltip is written when it is asked for.
    """

    def __init__(self, tip: str = "") -> None:
        super().__init__()
        self.tip = tip
        self.setToolTip(tip)

    def event(self, e):
        if e.type() == QEvent.Type.ToolTip:
            text = self.currentText()
            self.setToolTip(f"{text}\n{self.tip}" if text and self.tip else text or self.tip)
        return super().event(e)


def _combo(tip: str = "") -> QComboBox:
    c = NamedCombo(tip)
    c.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
    c.setMinimumContentsLength(6)
    c.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
    return c


def _row(*widgets, stretch=None) -> QHBoxLayout:
    row = QHBoxLayout()
    row.setSpacing(4)
    for i, w in enumerate(widgets):
        if isinstance(w, str):
            w = QLabel(w)
        row.addWidget(w, 1 if stretch == i else 0)
    return row


def _form(section: Section) -> QFormLayout:
    form = QFormLayout(section.body)
    form.setContentsMargins(4, 0, 0, 0)
    form.setSpacing(3)
    form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
    return form


def build_dock(root: QWidget) -> DockWidgets:
    """Build the dock's widgets into ``root``; returns them by name."""
    w = DockWidgets()
    outer = QVBoxLayout(root)
    outer.setContentsMargins(2, 2, 2, 2)
    w.scroll_area = QScrollArea()
    w.scroll_area.setWidgetResizable(True)
    w.scroll_area.setFrameShape(QScrollArea.Shape.NoFrame)
    # the content follows the dock's width (no sideways scrolling), only its height scrolls
    w.scroll_area.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
    inner = QWidget()
    col = QVBoxLayout(inner)
    col.setContentsMargins(2, 2, 2, 2)
    col.setSpacing(4)
    w.scroll_area.setWidget(inner)
    outer.addWidget(w.scroll_area, 1)

    # ---- image
    w.image_section = Section("Image")
    form = _form(w.image_section)
    w.image_combo = _combo("Image layer SAM 2 segments")
    form.addRow("image", w.image_combo)
    w.axis_spin = _tip(QSpinBox(), "Data axis tracked through")
    w.axis_kind = _tip(QComboBox(), "What the tracked axis is: time points or z slices "
                                    "(used in words and when labels are saved)")
    w.axis_kind.addItems(["time", "z"])
    form.addRow("through", _row(w.axis_kind, "axis", w.axis_spin, stretch=0))
    w.fixed_label = QLabel("other axis")
    w.fixed_spin = _tip(QSpinBox(), "Index of the other axis of a 4-D stack (e.g. z at each t)")
    w.follow_check = _check("follow", "Take the index from the viewer's slider")
    form.addRow(w.fixed_label, _row(w.fixed_spin, w.follow_check, stretch=1))
    w.contrast_label = QLabel("-")
    w.reread_button = _tip(QPushButton("Re-read"), "Use the image layer's current contrast limits")
    form.addRow("contrast", _row(w.contrast_label, w.reread_button, stretch=0))
    w.channels_section = Section("more (channels)", expanded=False)
    w.channels_section.toggle.setStyleSheet("QToolButton { border: none; }")
    sub = _form(w.channels_section)
    w.channels_edit = _tip(QLineEdit(), "Channels of an RGB/multichannel layer that feed SAM 2: "
                           "one for gray, two or three for red, green(, blue)")
    w.channels_edit.setPlaceholderText("all (or e.g. 0 or 0,2)")
    w.channels_edit.setEnabled(False)
    w.green_combo = _combo("Another image layer of this stack fed as SAM 2's green input")
    w.blue_combo = _combo("Another image layer of this stack fed as SAM 2's blue input")
    sub.addRow("channels", w.channels_edit)
    sub.addRow("+ green", w.green_combo)
    sub.addRow("+ blue", w.blue_combo)
    form.addRow(w.channels_section)
    col.addWidget(w.image_section)

    # ---- model
    w.model_section = Section("Model")
    form = _form(w.model_section)
    w.model_combo = _combo("The model to download (once) and load; a model folder or Meta .pt "
                           "file in the file row below takes its place")
    for i, (name, tip) in enumerate(MODEL_CHOICES.items()):
        w.model_combo.addItem(name)
        w.model_combo.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
    form.addRow("model", w.model_combo)
    w.device_combo = _tip(QComboBox(), "auto: a CUDA GPU, else Apple's MPS, else the CPU")
    w.device_combo.addItems(["auto", "cuda", "mps", "cpu"])
    form.addRow("device", w.device_combo)
    w.precision_combo = QComboBox()
    w.precision_combo.addItems(["auto", "float32", "bfloat16", "float16"])
    w.precision_combo.setToolTip(
        "Arithmetic precision. auto: bfloat16 on CUDA GPUs that have it, float32 elsewhere. "
        "bfloat16 also runs on CPUs: about twice float32's speed on CPUs with AMX units, masks "
        "within about 1 % of float32's, but about 9x slower than float32 on CPUs without "
        "bfloat16 arithmetic (most laptops and AMD CPUs: a warning says so). float16: GPUs.")
    form.addRow("precision", w.precision_combo)
    w.model_path = QLineEdit()
    w.model_path.setPlaceholderText("or a model folder / Meta .pt file")
    w.browse_button = QPushButton("…")
    w.browse_button.setFixedWidth(28)
    form.addRow("file", _row(w.model_path, w.browse_button, stretch=0))
    w.load_button = QPushButton("Load model")
    w.model_status = _wrapped("no model loaded")
    form.addRow(_row(w.load_button, w.model_status, stretch=1))
    col.addWidget(w.model_section)

    # ---- objects
    w.objects_section = Section("Objects")
    box = QVBoxLayout(w.objects_section.body)
    box.setContentsMargins(4, 0, 0, 0)
    box.setSpacing(3)
    w.labels_combo = _combo("Labels layer the masks are written into")
    box.addLayout(_row("labels", w.labels_combo, stretch=1))
    w.object_list = QListWidget()
    w.object_list.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    w.object_list.setMaximumHeight(110)
    w.object_list.setMinimumHeight(48)
    box.addWidget(w.object_list)
    w.new_button = QPushButton("New (N)")
    w.delete_button = _tip(QPushButton("Delete"), "Delete the selected objects (their pixels too)")
    w.positive_check = _check("positive (T)",
                              "Positive (on the object) or negative (background) clicks; T toggles")
    box.addLayout(_row(w.new_button, w.delete_button))
    box.addWidget(w.positive_check)
    w.mask_source = _combo("Labels layer with a seed (painted, Cellpose, StarDist...)")
    w.mask_id = _spin(0, 2**31 - 1, "its label id (0: the active object's id)")
    w.mask_button = _tip(QPushButton("Use as mask"), "Prompt the active object with this label")
    box.addLayout(_row(w.mask_source, w.mask_id, w.mask_button, stretch=0))
    w.seed_button = _tip(QPushButton("Seed from labels"), "Every label of the chosen Labels layer "
                         "on this frame becomes an object with the same id")
    w.find_button = _tip(QPushButton("Find objects"), "SAM 2's automatic masks on "
                         "the frame shown, into a Labels layer to review, then Seed from labels")
    box.addLayout(_row(w.seed_button, w.find_button))
    # what "Find objects" looks for: SAM 2's automatic masks (Sam2Session.segment_everything)
    w.find_section = Section("more (finding objects)", expanded=False)
    w.find_section.toggle.setStyleSheet("QToolButton { border: none; }")
    sub = _form(w.find_section)
    w.find_grid = _spin(4, 128, "points per side of the grid of clicks SAM 2 tries: more finds "
                        "smaller objects (the time grows with its square)")
    w.find_grid.setValue(16)
    w.find_zoom = _spin(0, 2, "also look closer, in overlapping crops of the frame (1: 4 crops, 2: "
                        "4 + 16), for small objects on large frames; each crop costs an image encoding")
    w.find_min_area = _spin(0, 10**7, "objects, holes and islands smaller than this many pixels "
                            "are dropped")
    w.find_min_area.setValue(64)
    sub.addRow("grid (points per side)", w.find_grid)
    sub.addRow("zoom-ins", w.find_zoom)
    sub.addRow("min area (px)", w.find_min_area)
    box.addWidget(w.find_section)
    col.addWidget(w.objects_section)

    # ---- propagate
    w.propagate_section = Section("Propagate")
    form = _form(w.propagate_section)
    w.direction_combo = QComboBox()
    w.direction_combo.addItems(["both", "forward", "backward"])
    w.selected_only = _tip(QCheckBox("selected only"),
                           "Propagate only the objects selected in the list (Shift/Ctrl-click for several)")
    form.addRow("direction", _row(w.direction_combo, w.selected_only, stretch=1))
    w.range_section = Section("more (frame range)", expanded=False)
    w.range_section.toggle.setStyleSheet("QToolButton { border: none; }")
    sub = _form(w.range_section)
    w.start_spin = _spin(0, 10**7, "the first frame (or slice) to propagate through")
    # "to" is the last frame propagated through, included ("last": the end of the stack)
    w.stop_spin = _spin(-1, 10**7, "the last frame (or slice) to propagate through, included")
    w.stop_spin.setSpecialValueText("last")
    w.stop_spin.setValue(-1)
    sub.addRow("from", _row(w.start_spin, "to", w.stop_spin, stretch=0))
    form.addRow(w.range_section)
    w.propagate_button = QPushButton("Propagate (Shift-P)")
    w.cancel_button = QPushButton("Cancel")
    w.cancel_button.setEnabled(False)
    form.addRow(_row(w.propagate_button, w.cancel_button, stretch=0))
    w.progress = ProgressLine()
    form.addRow(w.progress)
    w.undo_button = QPushButton("Undo prompt")
    w.revert_button = QPushButton("Revert last run")
    form.addRow(_row(w.undo_button, w.revert_button))
    col.addWidget(w.propagate_section)

    # ---- quality
    w.quality_section = Section("Quality of the selected object")
    box = QVBoxLayout(w.quality_section.body)
    box.setContentsMargins(4, 0, 0, 0)
    w.strip = QualityStrip()
    box.addWidget(w.strip)
    w.quality_label = _wrapped("")
    box.addWidget(w.quality_label)
    w.prev_flagged_button = QPushButton("◀ flagged (,)")
    w.next_flagged_button = QPushButton("flagged (.) ▶")
    box.addLayout(_row(w.prev_flagged_button, w.next_flagged_button))
    col.addWidget(w.quality_section)

    # ---- files
    w.files_section = Section("Files")
    box = QVBoxLayout(w.files_section.body)
    box.setContentsMargins(4, 0, 0, 0)
    w.save_button = QPushButton("Save session…")
    w.load_session_button = QPushButton("Load session…")
    box.addLayout(_row(w.save_button, w.load_session_button))
    w.export_button = _tip(QPushButton("Export labels…"), "ImageJ TIFF, OME-TIFF or OME-Zarr "
                           "with the image's voxel size and units")
    box.addWidget(w.export_button)
    col.addWidget(w.files_section)
    col.addStretch(1)

    # ---- always visible: the last word
    w.status = StatusLine()
    outer.addWidget(w.status)

    inner.setMinimumWidth(DOCK_WIDTH - 60)
    root.setMinimumWidth(DOCK_WIDTH - 30)
    root.setMaximumWidth(2 * DOCK_WIDTH)
    w.wheel_guard = WheelScrollsDock(w.scroll_area, inner)
    return w


class WheelScrollsDock(QObject):
    """The mouse wheel over a combo or spin box the user has not clicked scrolls the dock.

    Qt's combo and spin boxes change their value on a wheel turn under the pointer: scrolling
    down the dock would otherwise change whatever passes beneath it (the direction of the next
    propagation, the tracked axis, which resets the session). Once clicked (focused) they take
    the wheel as usual.
    """

    def __init__(self, scroll_area: QScrollArea, content: QWidget):
        super().__init__(scroll_area)
        self._bar = scroll_area.verticalScrollBar()
        for widget in [*content.findChildren(QComboBox), *content.findChildren(QAbstractSpinBox)]:
            widget.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # no focus from the wheel
            widget.installEventFilter(self)

    def eventFilter(self, obj, event):  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.Wheel and isinstance(obj, QWidget) and not obj.hasFocus():
            QCoreApplication.sendEvent(self._bar, event)
            return True
        return False
