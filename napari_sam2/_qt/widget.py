"""The "SAM 2 segmentation" dock widget: prompts in napari layers, masks in a Labels layer.

The widget is a thin layer over :class:`~napari_sam2.engine.session.Sam2Session`:

* clicks in its Points layer, boxes in its Shapes layer and objects of a Labels layer become
  prompts for the active object on the current frame; each prompt runs in a worker thread and its
  mask is written into the target Labels layer;
* propagation runs in a worker that yields frame by frame; every frame is written as it arrives,
  Cancel stops between frames;
* layers are touched only on the GUI thread (worker callbacks), and every write remembers the
  pixels it changed (:mod:`napari_sam2.label_edits`) so prompts and runs can be undone exactly.

``synchronous = True`` runs the work inline (for tests and scripts); otherwise napari's
``create_worker`` runs it in a thread with a progress bar in the activity dock.
"""

from __future__ import annotations

from collections import deque
from pathlib import Path

import numpy as np
from qtpy.QtCore import QEvent
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_sam2._qt.layout import LayerChannels, StackLayout, parse_channels
from napari_sam2._qt.prompt_layers import PromptLayers
from napari_sam2._qt.quality_strip import QualityStrip, flagged_frames
from napari_sam2.label_edits import EditRun, paint_masks

__all__ = ["Sam2Widget"]

MODEL_SIZES = ["sam2.1-tiny", "sam2.1-small", "sam2.1-base-plus", "sam2.1-large"]
NEW_LABELS = "(new layer)"
NO_LAYER = "(none)"
#: key -> (method name, what it does), bound on the viewer while the widget is open
SHORTCUTS = {
    "n": ("new_object", "new object"),
    "t": ("toggle_polarity", "toggle positive / negative clicks"),
    "Shift-P": ("propagate", "propagate"),
    ".": ("next_flagged", "next flagged frame"),
    ",": ("previous_flagged", "previous flagged frame"),
}


class Sam2Widget(QWidget):
    """Dock widget driving a SAM 2 session from napari layers."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.synchronous = False
        self.model = None
        self.session = None
        self.session_channels = None  # channels the session reads (None: as shown)
        self.layout_ = None  # StackLayout of the session's image layer
        self.labels_layer = None
        self.objects: dict[int, str] = {}
        self.active_id: int | None = None
        self.runs: list[EditRun] = []  # undo history of label writes, newest last
        self._queue: deque = deque()
        self._busy = False
        self._worker = None
        self._cancel = False
        self._docked = False
        self._build()
        self.prompts = PromptLayers(self)
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.connect(self._update_quality)
        self._refresh_layer_choices()
        self._closed = False
        # key -> (our handler, the handler it replaced): closing the widget puts the old ones back
        self._bound: dict[str, tuple] = {}
        for key, (method, _) in SHORTCUTS.items():
            handler = self._shortcut(method)
            self._bound[key] = (handler, self.viewer.bind_key(key, handler, overwrite=True))

    # ------------------------------------------------------------------ UI
    def _build(self):
        root = QVBoxLayout(self)

        box = QGroupBox("Image")
        form = QFormLayout(box)
        self.image_combo = QComboBox()
        self.image_combo.currentIndexChanged.connect(self._image_changed)
        self.axis_spin = QSpinBox(toolTip="Data axis tracked through (time or z)")
        self.fixed_spin = QSpinBox(toolTip="Index of the other axis of a 4-D stack (e.g. z at each t)")
        self.contrast_label = QLabel("-")
        reread = QPushButton("Re-read contrast", toolTip="Use the image layer's current contrast limits")
        reread.clicked.connect(self.reread_contrast)
        self.axis_spin.valueChanged.connect(lambda *_: self._reset_session())
        self.fixed_spin.valueChanged.connect(lambda *_: self._reset_session())
        form.addRow("image", self.image_combo)
        form.addRow("video axis", self.axis_spin)
        form.addRow("other axis index", self.fixed_spin)
        # channels: some of an RGB(A)/multichannel layer's channels, or other (single-channel)
        # image layers of the same stack as SAM 2's green and blue inputs
        self.channels_edit = QLineEdit(
            placeholderText="all (or e.g. 0 or 0,2)", enabled=False,
            toolTip="Channels of an RGB/multichannel layer that feed SAM 2: one for gray, "
                    "two or three for red, green(, blue)")
        self.channels_edit.editingFinished.connect(self._channels_changed)
        self.green_combo = QComboBox(toolTip="Another image layer of this stack fed as SAM 2's green input")
        self.blue_combo = QComboBox(toolTip="Another image layer of this stack fed as SAM 2's blue input")
        for combo in (self.green_combo, self.blue_combo):
            combo.currentIndexChanged.connect(self._channels_changed)
        form.addRow("channels", self.channels_edit)
        row = QHBoxLayout()
        row.addWidget(QLabel("+ green"))
        row.addWidget(self.green_combo, 1)
        row.addWidget(QLabel("blue"))
        row.addWidget(self.blue_combo, 1)
        form.addRow("", row)
        row = QHBoxLayout()
        row.addWidget(self.contrast_label, 1)
        row.addWidget(reread)
        form.addRow("contrast", row)
        root.addWidget(box)

        box = QGroupBox("Model")
        form = QFormLayout(box)
        self.size_combo = QComboBox()
        self.size_combo.addItems(MODEL_SIZES)
        self.model_path = QLineEdit(placeholderText="or a model folder / Meta .pt file")
        browse = QPushButton("…")
        browse.clicked.connect(self._browse_model)
        row = QHBoxLayout()
        row.addWidget(self.model_path, 1)
        row.addWidget(browse)
        self.device_combo = QComboBox()
        self.device_combo.addItems(["auto", "cuda", "mps", "cpu"])
        self.load_button = QPushButton("Load model")
        self.load_button.clicked.connect(self.load_model)
        self.model_status = QLabel("no model loaded")
        form.addRow("size", self.size_combo)
        form.addRow("file", row)
        form.addRow("device", self.device_combo)
        form.addRow(self.load_button, self.model_status)
        root.addWidget(box)

        box = QGroupBox("Objects")
        col = QVBoxLayout(box)
        row = QHBoxLayout()
        row.addWidget(QLabel("labels"))
        self.labels_combo = QComboBox(toolTip="Labels layer the masks are written into")
        self.labels_combo.currentIndexChanged.connect(self._labels_changed)
        row.addWidget(self.labels_combo, 1)
        col.addLayout(row)
        self.object_list = QListWidget()
        self.object_list.currentItemChanged.connect(self._object_selected)
        self.object_list.itemChanged.connect(self._object_renamed)
        col.addWidget(self.object_list)
        row = QHBoxLayout()
        for text, slot in (("New (N)", self.new_object), ("Delete", self.delete_object)):
            b = QPushButton(text)
            b.clicked.connect(slot)
            row.addWidget(b)
        col.addLayout(row)
        self.positive_check = QCheckBox("positive clicks (T toggles)", checked=True)
        self.positive_check.toggled.connect(lambda on: self.prompts.set_polarity(on))
        col.addWidget(self.positive_check)
        row = QHBoxLayout()
        self.mask_source = QComboBox(toolTip="Labels layer with a seed (painted, Cellpose, StarDist...)")
        self.mask_id = QSpinBox(minimum=0, maximum=2**31 - 1, toolTip="its label id (0: the active object's id)")
        mask_button = QPushButton("Use as mask")
        mask_button.clicked.connect(self.mask_from_labels)
        row.addWidget(self.mask_source, 1)
        row.addWidget(self.mask_id)
        row.addWidget(mask_button)
        col.addLayout(row)
        root.addWidget(box)

        box = QGroupBox("Propagate")
        form = QFormLayout(box)
        self.direction_combo = QComboBox()
        self.direction_combo.addItems(["both", "forward", "backward"])
        self.start_spin = QSpinBox(minimum=0, maximum=10**7)
        self.stop_spin = QSpinBox(minimum=0, maximum=10**7, toolTip="0: to the last frame")
        self.selected_only = QCheckBox("selected object only")
        form.addRow("direction", self.direction_combo)
        row = QHBoxLayout()
        row.addWidget(self.start_spin)
        row.addWidget(QLabel("to"))
        row.addWidget(self.stop_spin)
        form.addRow("frames", row)
        form.addRow(self.selected_only)
        row = QHBoxLayout()
        self.propagate_button = QPushButton("Propagate (Shift-P)")
        self.propagate_button.clicked.connect(self.propagate)
        self.cancel_button = QPushButton("Cancel", enabled=False)
        self.cancel_button.clicked.connect(self.cancel)
        row.addWidget(self.propagate_button)
        row.addWidget(self.cancel_button)
        form.addRow(row)
        self.progress = QProgressBar()
        form.addRow(self.progress)
        row = QHBoxLayout()
        undo_prompt = QPushButton("Undo prompt")
        undo_prompt.clicked.connect(self.undo_prompt)
        revert = QPushButton("Revert last run")
        revert.clicked.connect(self.revert_last_run)
        row.addWidget(undo_prompt)
        row.addWidget(revert)
        form.addRow(row)
        root.addWidget(box)

        box = QGroupBox("Quality of the selected object")
        col = QVBoxLayout(box)
        self.strip = QualityStrip()
        self.strip.frame_clicked.connect(self.go_to_frame)
        col.addWidget(self.strip)
        self.quality_label = QLabel("")
        col.addWidget(self.quality_label)
        row = QHBoxLayout()
        for text, slot in (("◀ flagged (,)", self.previous_flagged), ("flagged (.) ▶", self.next_flagged)):
            b = QPushButton(text)
            b.clicked.connect(slot)
            row.addWidget(b)
        col.addLayout(row)
        root.addWidget(box)

        row = QHBoxLayout()
        for text, slot in (("Save session…", self._save_dialog), ("Load session…", self._load_dialog)):
            b = QPushButton(text)
            b.clicked.connect(slot)
            row.addWidget(b)
        root.addLayout(row)
        root.addStretch(1)

    # ------------------------------------------------------------------ layers
    def _layers_of(self, kind):
        from napari.layers import Image, Labels

        cls = {"image": Image, "labels": Labels}[kind]
        return [l for l in self.viewer.layers if isinstance(l, cls)]

    def _refresh_layer_choices(self, *_):
        def refill(combo, names, extra=()):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([*extra, *names])
            if current in [*extra, *names]:
                combo.setCurrentText(current)
            combo.blockSignals(False)

        images = [l.name for l in self._layers_of("image")]
        labels = [l.name for l in self._layers_of("labels")]
        before = self.image_combo.currentText()
        refill(self.image_combo, images)
        refill(self.labels_combo, labels, [NEW_LABELS])
        refill(self.mask_source, labels)
        refill(self.green_combo, images, [NO_LAYER])
        refill(self.blue_combo, images, [NO_LAYER])
        if self.image_combo.currentText() != before:
            self._image_changed()

    @property
    def image_layer(self):
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _image_changed(self, *_):
        layer = self.image_layer
        if layer is None:
            return
        data = layer.data[0] if layer.multiscale else layer.data
        nd = data.ndim - (1 if layer.rgb else 0)
        self.axis_spin.blockSignals(True)
        self.axis_spin.setRange(0, max(0, nd - 3))
        self.axis_spin.setValue(0)
        self.axis_spin.setEnabled(nd > 2)
        self.axis_spin.blockSignals(False)
        self.fixed_spin.setEnabled(nd > 3)
        self.channels_edit.setEnabled(bool(layer.rgb))
        self._reset_session()

    def _channels_changed(self, *_):
        """New channel choice: rebuild the session and replay its prompts (labels stay)."""
        if self.session is not None:
            self.reread_contrast()

    def _engine_input(self):
        """What SAM 2 reads: ``(array-like, has channel axis, contrast limits, channels)``.

        Contrast limits come from the layers (what you see is what SAM 2 gets): one pair for a
        gray or RGB layer, one pair per layer when other layers feed green and blue.
        """
        layer = self.image_layer
        if layer is None:
            raise ValueError("add an image layer first")

        def level0(lyr):
            return lyr.data[0] if lyr.multiscale else lyr.data

        def limits(lyr):
            return tuple(float(c) for c in lyr.contrast_limits)

        extra = [self.viewer.layers[c.currentText()] for c in (self.green_combo, self.blue_combo)
                 if c.currentText() not in (NO_LAYER, layer.name) and c.currentText() in self.viewer.layers]
        if extra:
            if layer.rgb or any(lyr.rgb for lyr in extra):
                raise ValueError(
                    "green and blue layers combine single-channel image layers; this image is RGB "
                    "already: pick its channels in 'channels' and set green and blue to (none)"
                )
            arrays = [level0(layer), *[level0(lyr) for lyr in extra]]
            return (LayerChannels(arrays), True, [limits(lyr) for lyr in (layer, *extra)],
                    list(range(len(arrays))))
        channels = parse_channels(self.channels_edit.text()) if layer.rgb else None
        return level0(layer), bool(layer.rgb), limits(layer), channels

    def _current_layout(self, shape=None, has_channels=None) -> StackLayout:
        layer = self.image_layer
        if layer is None:
            raise ValueError("add an image layer first")
        if shape is None:
            data = layer.data[0] if layer.multiscale else layer.data
            shape, has_channels = tuple(data.shape), bool(layer.rgb)
        lay = StackLayout(tuple(shape), rgb=has_channels, video_axis=self.axis_spin.value())
        others = lay.other_axes
        if others:
            self.fixed_spin.setMaximum(max(0, shape[others[0]] - 1))
            lay.fixed = {a: (self.fixed_spin.value() if i == 0 else 0) for i, a in enumerate(others)}
        return lay

    def _labels_changed(self, *_):
        name = self.labels_combo.currentText()
        if name != NEW_LABELS and name in self.viewer.layers:
            self.labels_layer = self.viewer.layers[name]

    def _ensure_labels(self):
        lay = self.layout_
        if self.labels_layer is not None and self.labels_layer in self.viewer.layers \
                and self.labels_layer.data.shape == lay.labels_shape:
            return self.labels_layer
        img = self.image_layer
        data = np.zeros(lay.labels_shape, np.uint16)
        self.labels_layer = self.viewer.add_labels(
            data, name="SAM 2 labels", scale=img.scale[: lay.ndim], translate=img.translate[: lay.ndim],
            metadata=dict(img.metadata),
        )
        self.labels_combo.setCurrentText(self.labels_layer.name)
        return self.labels_layer

    # ------------------------------------------------------------------ model and session
    def _browse_model(self):
        path, _ = QFileDialog.getOpenFileName(self, "SAM 2 checkpoint", "", "Checkpoints (*.pt *.pth *.safetensors *.json)")
        if path:
            self.model_path.setText(str(Path(path).parent if path.endswith(".json") else path))

    def load_model(self, then=None):
        """Load the chosen model in a worker; the session is (re)built when it arrives.

        Download and loading progress goes to a bar in napari's activity dock (and the status
        line); ``then`` is called on the GUI thread once the model is there (not after a failure).
        """
        from napari.utils import progress as activity_progress

        source = self.model_path.text().strip() or self.size_combo.currentText()
        device = self.device_combo.currentText()
        previous_status = self.model_status.text()
        self.model_status.setText(f"loading {source}…")
        self.load_button.setEnabled(False)
        bar = activity_progress(total=0, desc=f"Loading {Path(str(source)).name}")
        self.model_progress = []  # (done, total, message) as reported, for the status line

        def work():
            # load_model blocks; it runs in a helper thread and its progress callbacks come
            # back through a queue, so that this generator can yield them to the GUI thread
            import queue
            import threading

            from napari_sam2 import load_model

            reports: queue.Queue = queue.Queue()
            out: dict = {}

            def run():
                try:
                    out["model"] = load_model(source, device=device,
                                              progress=lambda *r: reports.put(r))
                except BaseException as err:  # noqa: BLE001 - re-raised in the worker below
                    out["error"] = err
                finally:
                    reports.put(None)

            threading.Thread(target=run, name="napari-sam2 model loading", daemon=True).start()
            while (report := reports.get()) is not None:
                yield report
            if "error" in out:
                raise out["error"]
            return out["model"]

        def on_progress(report):
            done, total, message = report
            self.model_progress.append(report)
            if total > 0 and bar.total != total:
                bar.total = total
            bar.n = min(done, total) if total > 0 else done
            bar.update(0)  # emits the new value to the activity dock
            if message:
                bar.set_description(message)
            percent = f" {100 * done / total:.0f} %" if total > 0 else ""
            self.model_status.setText(f"{message or 'loading'}{percent}")

        loaded = []

        def done(model):
            loaded.append(model)
            self.model = model
            self.model_status.setText(f"{Path(str(source)).name} on {model.device}")
            self._reset_session()
            if then is not None:
                then()

        def finished():
            bar.close()
            self.load_button.setEnabled(True)
            if not loaded:  # failed: the notification says why; the previous model stays
                self.model_status.setText(previous_status if self.model is not None else "no model loaded")

        self._submit(work, done, on_yield=on_progress, on_finish=finished)

    def _reset_session(self):
        """Forget the engine session (a new image, axis or model); labels and prompts stay."""
        self.session = None
        self.layout_ = None
        self.prompts.forget_sent()

    def ensure_session(self):
        """The engine session for the current image, model and axes (built on first use)."""
        if self.session is not None:
            return self.session
        if self.model is None:
            raise ValueError("load a model first (Model ▸ Load model)")
        from napari_sam2 import Sam2Session

        data, has_channels, contrast, channels = self._engine_input()
        lay = self._current_layout(data.shape, has_channels)
        self.session = Sam2Session(self.model, lay.frames(data), channels=channels, contrast=contrast,
                                   rgb=has_channels if lay.is_single_image else None)
        self.layout_ = lay
        self.session_channels = channels
        pairs = [contrast] if isinstance(contrast, tuple) else contrast
        self.contrast_label.setText(", ".join(f"{lo:g} – {hi:g}" for lo, hi in pairs))
        self.stop_spin.setMaximum(lay.n_frames)
        self.start_spin.setMaximum(max(0, lay.n_frames - 1))
        self._ensure_labels()
        self.prompts.ensure_layers()
        return self.session

    def reread_contrast(self):
        """Rebuild the session with the image layer's contrast limits and replay its prompts."""
        old = self.session
        self._reset_session()
        if old is None or not old.objects:
            return
        from napari_sam2.io.session_file import session_from_engine

        saved = session_from_engine(old)
        saved.settings.contrast = None

        def done(_):
            self.prompts.mark_all_sent()
            self._repaint_prompted_frames()

        self._replay(saved, done, progress="Re-reading contrast")

    def _replay(self, session_file, done, progress):
        """Replay a session file's prompts in a worker, then call ``done(session_file)``.

        The engine session (and any layer it needs) is made here, on the GUI thread; the worker
        only runs the prompts.
        """
        from napari_sam2.io.session_file import replay

        try:
            session = self.ensure_session()
        except ValueError as err:
            return self._error(err)

        def work():
            replay(session_file, session)
            return session_file

        self._submit(work, done, progress=progress)

    # ------------------------------------------------------------------ objects
    def next_free_id(self) -> int:
        used = max([0, *self.objects])
        if self.labels_layer is not None and self.labels_layer in self.viewer.layers:
            used = max(used, int(np.max(self.labels_layer.data)))
        return used + 1

    def new_object(self, name: str | None = None) -> int:
        """Add an object with the next free label id and make it active."""
        obj_id = self.next_free_id()
        self._add_object_item(obj_id, name or f"object {obj_id}")
        return obj_id

    def _add_object_item(self, obj_id, name):
        from qtpy.QtCore import Qt
        from qtpy.QtGui import QColor, QIcon, QPixmap

        self.objects[obj_id] = name
        item = QListWidgetItem(f"{name}")
        item.setData(Qt.ItemDataRole.UserRole, obj_id)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsEditable)
        if self.labels_layer is not None:
            rgba = np.asarray(self.labels_layer.get_color(obj_id), dtype=float)
            pix = QPixmap(12, 12)
            pix.fill(QColor(*(int(255 * c) for c in rgba[:3])))
            item.setIcon(QIcon(pix))
        self.object_list.addItem(item)
        self.object_list.setCurrentItem(item)

    def _object_selected(self, item, *_):
        from qtpy.QtCore import Qt

        self.active_id = None if item is None else int(item.data(Qt.ItemDataRole.UserRole))
        self.prompts.set_active(self.active_id)
        self._update_quality()

    def _object_renamed(self, item):
        from qtpy.QtCore import Qt

        obj_id = item.data(Qt.ItemDataRole.UserRole)
        if obj_id is not None:
            self.objects[int(obj_id)] = item.text()

    def delete_object(self):
        """Remove the active object: its prompts, its pixels (undoable) and its memory."""
        obj_id = self.active_id
        if obj_id is None:
            return
        self.prompts.remove_object(obj_id)
        if self.session is not None and obj_id in self.session.objects:
            self.session.remove_object(obj_id)
        if self.labels_layer is not None:
            run = EditRun(f"delete object {obj_id}")
            for f in range(self.layout_.n_frames if self.layout_ else 0):
                edit = paint_masks(self.labels_layer.data, self.layout_.index(f),
                                   {obj_id: np.zeros(self.session.frame_shape, bool)}, self.objects)
                if edit is not None:
                    run.edits.append(edit)
            self._push_run(run)
        del self.objects[obj_id]
        self.object_list.takeItem(self.object_list.currentRow())

    def ensure_active(self) -> int:
        if self.active_id is None:
            self.new_object()
        return self.active_id

    # ------------------------------------------------------------------ prompts
    def current_frame(self) -> int:
        lay = self.layout_ or self._current_layout()
        if lay.is_single_image:
            return 0
        offset = self.viewer.dims.ndim - self.image_layer.ndim
        return int(self.viewer.dims.current_step[lay.video_axis + offset])

    def go_to_frame(self, frame: int):
        lay = self.layout_ or self._current_layout()
        if lay.is_single_image:
            return
        offset = self.viewer.dims.ndim - self.image_layer.ndim
        self.viewer.dims.set_current_step(lay.video_axis + offset, int(frame))

    def run_prompt(self, frame: int, obj_id: int, call, label: str):
        """Run one engine prompt call in a worker and write the object's mask on that frame."""
        session = self.ensure_session()  # here, on the GUI thread: it may add layers

        def work():
            call(session)
            return frame, obj_id

        self._submit(work, lambda res: self._paint_object_frame(*res, label=label), progress=None)

    def mask_from_labels(self):
        """Prompt the active object with an object of the chosen Labels layer on this frame."""
        name = self.mask_source.currentText()
        if name not in self.viewer.layers:
            return self._error(ValueError("choose a Labels layer holding the seed mask"))
        session = self.ensure_session()
        obj_id = self.ensure_active()
        frame = self.current_frame()
        source_id = self.mask_id.value() or obj_id
        seed = np.asarray(self.viewer.layers[name].data[self.layout_.index(frame)]) == source_id
        if seed.shape != tuple(session.frame_shape):
            return self._error(ValueError("the seed Labels layer does not have the image's shape"))
        if not seed.any():
            return self._error(ValueError(f"label {source_id} is not on frame {frame} of '{name}'"))
        self.prompts.record_mask(frame, obj_id)
        self.run_prompt(frame, obj_id, lambda s: s.add_mask(frame, obj_id, seed), "mask")

    def toggle_polarity(self):
        self.positive_check.setChecked(not self.positive_check.isChecked())

    def undo_prompt(self):
        """Undo the last prompt (click, box, mask) of the session and redraw its frame."""
        if self.session is None:
            return
        res = self.session.undo()
        if res is None:
            return
        frame, obj_id = res
        self.prompts.after_undo(frame, obj_id)
        if frame is not None:
            self._paint_object_frame(frame, obj_id, label="undo")

    def _paint_object_frame(self, frame, obj_id, label="prompt"):
        session = self.session
        mask = None
        if obj_id in session.objects:
            mask = session.mask(frame, obj_id)
        if mask is None:
            mask = np.zeros(session.frame_shape, bool)
        edit = paint_masks(self.labels_layer.data, self.layout_.index(frame), {obj_id: mask},
                           set(self.objects) | set(session.objects))
        self._push_run(EditRun(label, [edit] if edit else []))
        self._update_quality()

    # ------------------------------------------------------------------ propagation
    def propagate(self):
        """Propagate all (or the selected) objects; results stream into the labels."""
        session = self.ensure_session()
        if self._busy:
            return self._error(ValueError("wait for the running task to finish (or cancel it)"))
        obj_ids = [self.active_id] if self.selected_only.isChecked() and self.active_id else None
        stop = self.stop_spin.value() or None
        kwargs = dict(direction=self.direction_combo.currentText(), start=self.start_spin.value(),
                      stop=stop, obj_ids=obj_ids)
        try:
            total = len(session.plan_propagation(**kwargs))
        except ValueError as err:
            return self._error(err)
        run = EditRun("propagation")
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self.cancel_button.setEnabled(True)
        self.propagate_button.setEnabled(False)
        self._cancel = False

        def work():
            for item in session.propagate(**kwargs):
                yield item
                if self._cancel:
                    return

        def on_frame(item):
            frame, masks = item
            edit = paint_masks(self.labels_layer.data, self.layout_.index(frame), masks,
                               set(self.objects) | set(session.objects))
            if edit is not None:
                run.edits.append(edit)
            self.progress.setValue(self.progress.value() + 1)
            self.labels_layer.refresh()

        def finished():
            self._push_run(run)
            self.cancel_button.setEnabled(False)
            self.propagate_button.setEnabled(True)
            self._update_quality()

        self._submit(work, None, progress={"total": total, "desc": "SAM 2 propagation"},
                     on_yield=on_frame, on_finish=finished)

    def cancel(self):
        """Stop the propagation after the current frame; finished frames stay."""
        self._cancel = True
        if self._worker is not None and hasattr(self._worker, "quit"):
            self._worker.quit()

    def revert_last_run(self):
        """Put the labels back exactly as they were before the last propagation run."""
        for i in range(len(self.runs) - 1, -1, -1):
            if self.runs[i].label == "propagation":
                run = self.runs.pop(i)
                run.undo(self.labels_layer.data)
                self.labels_layer.refresh()
                return run
        return None

    def _push_run(self, run: EditRun):
        if run.edits:
            self.runs.append(run)
            del self.runs[:-50]
        if self.labels_layer is not None:
            self.labels_layer.refresh()

    # ------------------------------------------------------------------ quality
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
        self.quality_label.setText(f"{done} frames tracked, {len(flagged)} flagged"
                                   + (f": {', '.join(map(str, flagged[:8]))}{'…' if len(flagged) > 8 else ''}"
                                      if len(flagged) else ""))

    def _flagged(self):
        if self.session is None or self.active_id not in self.session.objects:
            return np.array([], int)
        return flagged_frames(self.session.quality(self.active_id), self.strip.iou_threshold)

    def next_flagged(self):
        later = [f for f in self._flagged() if f > self.current_frame()]
        if later:
            self.go_to_frame(later[0])

    def previous_flagged(self):
        earlier = [f for f in self._flagged() if f < self.current_frame()]
        if earlier:
            self.go_to_frame(earlier[-1])

    # ------------------------------------------------------------------ session files
    def save_session(self, path) -> Path:
        """Write the objects and prompts as a session file (the command line reads it too)."""
        from napari_sam2.io.session_file import SessionSettings, session_from_engine, write_session

        if self.session is None or not self.session.objects:
            raise ValueError("there is nothing to save yet: add a prompt first")
        model = self.model_path.text().strip() or self.size_combo.currentText()
        layers = [c.currentText() for c in (self.green_combo, self.blue_combo)
                  if c.currentText() not in (NO_LAYER, self.image_layer.name)]
        settings = SessionSettings(model=model, axis=self.layout_.video_axis,
                                   image_layer=self.image_layer.name,
                                   channels=None if layers else self.session_channels,
                                   extra={"channel_layers": layers} if layers else {})
        sf = session_from_engine(self.session, settings, names=self.objects)
        return write_session(path, sf)

    def load_session(self, path):
        """Read a session file, replay its prompts and show their masks."""
        from napari_sam2.io.session_file import read_session

        sf = read_session(path)
        if self.model is None and sf.settings.model:
            self.model_path.setText(str(sf.settings.model))
        if sf.settings.axis is not None and self.axis_spin.isEnabled():
            self.axis_spin.setValue(int(sf.settings.axis))
        if sf.settings.channels and self.channels_edit.isEnabled():
            self.channels_edit.setText(",".join(str(c) for c in sf.settings.channels))
        names = list(sf.settings.extra.get("channel_layers", []))[:2]
        for combo, name in zip((self.green_combo, self.blue_combo), names):
            if combo.findText(name) >= 0:
                combo.setCurrentText(name)

        def done(sf):
            for obj in sf.objects:
                if obj.id not in self.objects:
                    self._add_object_item(obj.id, obj.name or f"object {obj.id}")
            self.prompts.show_session_prompts(sf)
            self._repaint_prompted_frames()

        def start_replay():
            self._replay(sf, done, progress="Loading session")

        if self.model is None:
            self.load_model(then=start_replay)
        else:
            start_replay()

    def _repaint_prompted_frames(self):
        for obj_id in self.session.objects:
            for frame in self.session.prompted_frames(obj_id):
                self._paint_object_frame(frame, obj_id, label="session")

    def _save_dialog(self):
        path, _ = QFileDialog.getSaveFileName(self, "Save SAM 2 session", "session.json", "JSON (*.json)")
        if path:
            try:
                self.save_session(path)
            except (ValueError, OSError) as err:
                self._error(err)

    def _load_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self, "Load SAM 2 session", "", "JSON (*.json)")
        if path:
            try:
                self.load_session(path)
            except (ValueError, OSError) as err:
                self._error(err)

    # ------------------------------------------------------------------ workers
    def _submit(self, fn, on_result, progress=None, on_yield=None, on_finish=None):
        """Queue work; one task runs at a time, in order, so prompts apply in the order given."""
        self._queue.append((fn, on_result, progress, on_yield, on_finish))
        if not self._busy:
            self._run_next()

    def _run_next(self):
        if not self._queue:
            self._busy = False
            self._worker = None
            return
        self._busy = True
        fn, on_result, progress, on_yield, on_finish = self._queue.popleft()
        if self.synchronous:
            try:
                result = fn()
                if on_yield is not None:  # a generator: yields, then maybe returns a value
                    while True:
                        try:
                            item = next(result)
                        except StopIteration as stop:
                            result = stop.value
                            break
                        on_yield(item)
                if on_result is not None:
                    on_result(result)
            except Exception as err:  # noqa: BLE001 - shown to the user, the widget stays usable
                self._error(err)
            finally:
                if on_finish is not None:
                    on_finish()
            self._run_next()
            return
        from napari.qt.threading import create_worker

        prog = {"desc": progress} if isinstance(progress, str) else progress
        worker = create_worker(fn, _progress=prog, _ignore_errors=True)
        if on_yield is not None:
            worker.yielded.connect(on_yield)
        if on_result is not None:
            worker.returned.connect(on_result)
        worker.errored.connect(self._error)
        if on_finish is not None:
            worker.finished.connect(on_finish)
        worker.finished.connect(self._run_next)
        self._worker = worker
        worker.start()

    def wait(self, timeout: float = 60.0) -> None:
        """Process Qt events until queued work is done (for scripts and tests)."""
        import time

        from qtpy.QtWidgets import QApplication

        end = time.monotonic() + timeout
        while (self._busy or self._queue) and time.monotonic() < end:
            QApplication.processEvents()
            time.sleep(0.01)
        if self._busy or self._queue:
            raise TimeoutError("SAM 2 work did not finish in time")

    def _error(self, err):
        from napari.utils.notifications import show_error

        self.last_error = err
        show_error(f"SAM 2: {err}")

    # ------------------------------------------------------------------ shortcuts
    def _shortcut(self, method):
        def handler(viewer):
            if self._closed:
                return
            try:
                getattr(self, method)()
            except ValueError as err:
                self._error(err)

        handler.__name__ = f"sam2_{method}"
        return handler

    def unbind_shortcuts(self):
        """Give the widget's keys back: unbind them, or restore what they did before."""
        from napari.utils.key_bindings import coerce_keybinding

        for key, (handler, previous) in self._bound.items():
            # leave the key alone if something else has been bound to it since
            if self.viewer.keymap.get(coerce_keybinding(key)) is handler:
                self.viewer.bind_key(key, previous, overwrite=True)
        self._bound.clear()

    def teardown(self):
        """Stop work, unbind the shortcuts and stop listening to the viewer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.cancel()
        self._queue.clear()
        self.unbind_shortcuts()
        self.prompts.disconnect()
        for emitter, slot in ((self.viewer.layers.events.inserted, self._refresh_layer_choices),
                              (self.viewer.layers.events.removed, self._refresh_layer_choices),
                              (self.viewer.dims.events.current_step, self._update_quality)):
            emitter.disconnect(slot)

    def event(self, ev):
        # napari closes a dock widget by taking the widget out of its dock (setParent(None)),
        # without closing it: that is when the widget is gone for the user
        if ev.type() == QEvent.Type.ParentChange and hasattr(self, "_bound"):
            if self.parent() is not None:
                self._docked = True
            elif self._docked:
                self.teardown()
        return super().event(ev)

    def closeEvent(self, event):  # noqa: N802 (Qt name)
        self.teardown()
        super().closeEvent(event)
