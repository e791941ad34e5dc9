"""The "SAM 2 segmentation" dock widget: prompts in napari layers, masks in a Labels layer.

One click reads down three files: the Points layer's change reaches
:class:`~napari_sam2._qt.prompt_layers.PromptLayers`, which calls :meth:`Sam2Widget.run_prompt`;
the engine call runs in a worker (:class:`~napari_sam2._qt.tasks.TaskQueue`) and the mask it
returns is painted by the Qt-free :class:`~napari_sam2.annotator.Annotator` (objects, label
writes, undo), then shown by :class:`~napari_sam2._qt.labels_view.LabelsView` (only the changed
box, only when on screen). Propagation streams frame by frame the same way; each frame is
cropped to the box that changes in the worker and painted on the GUI thread.

``synchronous = True`` runs the work inline (for tests and scripts).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtCore import QEvent, Qt
from qtpy.QtWidgets import QFileDialog, QListWidgetItem, QWidget

from napari_sam2._qt.files import DockFiles
from napari_sam2._qt.labels_view import LabelsView
from napari_sam2._qt.panels import MODEL_SIZES, build_dock
from napari_sam2._qt.prompt_layers import PromptLayers
from napari_sam2._qt.tasks import TaskQueue
from napari_sam2.annotator import Annotator
from napari_sam2.label_edits import EditRun
from napari_sam2.quality import flagged_frames
from napari_sam2.stack_layout import LayerChannels, StackLayout, parse_channels

__all__ = ["Sam2Widget", "MODEL_SIZES"]

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


class Sam2Widget(DockFiles, QWidget):
    """Dock widget driving a SAM 2 session from napari layers."""

    def __init__(self, napari_viewer, parent=None):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.core = Annotator()
        self.tasks = TaskQueue(self._error)
        self.view = LabelsView()
        self.session_channels = None  # channels the session reads (None: as shown)
        self.labels_layer = None
        self.last_error = None
        self._cancel = False
        self._docked = False
        self._closed = False
        self.ui = build_dock(self)
        self.__dict__.update({k: v for k, v in vars(self.ui).items()})
        self._connect()
        self.prompts = PromptLayers(self)
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.connect(self._step_changed)
        self.viewer.mouse_drag_callbacks.append(self._pick_object)
        self._refresh_layer_choices()
        # key -> (our handler, the handler it replaced): closing the widget puts the old ones back
        self._bound: dict[str, tuple] = {}
        for key, (method, _) in SHORTCUTS.items():
            handler = self._shortcut(method)
            self._bound[key] = (handler, self.viewer.bind_key(key, handler, overwrite=True))

    # ------------------------------------------------------------------ state (in the core)
    model = property(lambda self: self.core.model, lambda self, v: setattr(self.core, "model", v))
    session = property(lambda self: self.core.session, lambda self, v: setattr(self.core, "session", v))
    layout_ = property(lambda self: self.core.layout, lambda self, v: setattr(self.core, "layout", v))
    objects = property(lambda self: self.core.objects)
    runs = property(lambda self: self.core.runs)
    active_id = property(lambda self: self.core.active_id)
    synchronous = property(lambda self: self.tasks.synchronous,
                           lambda self, v: setattr(self.tasks, "synchronous", bool(v)))
    _busy = property(lambda self: self.tasks.busy)
    _queue = property(lambda self: self.tasks)

    @property
    def unit(self) -> str:
        """What the tracked axis holds, in words: "frames" or "slices"."""
        return "slices" if self.axis_kind.currentText() == "z" else "frames"

    # ------------------------------------------------------------------ wiring
    def _connect(self):
        def press(button, slot):
            button.clicked.connect(lambda *_: self._guard(slot))

        self.image_combo.currentIndexChanged.connect(self._image_changed)
        self.axis_spin.valueChanged.connect(lambda *_: self._axis_changed())
        self.axis_kind.currentIndexChanged.connect(lambda *_: self._axis_named())
        self.fixed_spin.valueChanged.connect(lambda *_: self._reset_session())
        self.follow_check.toggled.connect(lambda on: self._step_changed())
        self.channels_edit.editingFinished.connect(self._channels_changed)
        for combo in (self.green_combo, self.blue_combo):
            combo.currentIndexChanged.connect(self._channels_changed)
        self.labels_combo.currentIndexChanged.connect(self._labels_changed)
        self.object_list.currentItemChanged.connect(self._object_selected)
        self.object_list.itemChanged.connect(self._object_renamed)
        self.positive_check.toggled.connect(lambda on: self.prompts.set_polarity(on))
        self.strip.frame_clicked.connect(self.go_to_frame)
        self.cancel_button.clicked.connect(lambda *_: self.cancel())
        for button, slot in ((self.reread_button, self.reread_contrast),
                             (self.browse_button, self._browse_model),
                             (self.load_button, self.load_model),
                             (self.new_button, self.new_object),
                             (self.delete_button, self.delete_selected),
                             (self.mask_button, self.mask_from_labels),
                             (self.seed_button, self.seed_from_labels),
                             (self.find_button, self.find_objects),
                             (self.propagate_button, self.propagate),
                             (self.undo_button, self.undo_prompt),
                             (self.revert_button, self.revert_last_run),
                             (self.prev_flagged_button, self.previous_flagged),
                             (self.next_flagged_button, self.next_flagged),
                             (self.save_button, self._save_dialog),
                             (self.load_session_button, self._load_dialog),
                             (self.export_button, self._export_dialog)):
            press(button, slot)

    def _guard(self, fn, *args):
        """Run a button's action; a ValueError/OSError becomes the status line's message."""
        try:
            return fn(*args)
        except (ValueError, OSError) as err:
            self._error(err)

    def say(self, text: str) -> None:
        """Tell the user what just happened (the dock's status line)."""
        self.status.say(text)

    # ------------------------------------------------------------------ layers
    def _layers_of(self, kind):
        from napari.layers import Image, Labels

        cls = {"image": Image, "labels": Labels}[kind]
        return [lyr for lyr in self.viewer.layers if isinstance(lyr, cls)]

    def _refresh_layer_choices(self, *_):
        def refill(combo, names, extra=()):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            combo.addItems([*extra, *names])
            if current in [*extra, *names]:
                combo.setCurrentText(current)
            combo.blockSignals(False)

        images = [lyr.name for lyr in self._layers_of("image")]
        labels = [lyr.name for lyr in self._layers_of("labels")]
        before = self.image_combo.currentText()
        refill(self.image_combo, images)
        refill(self.labels_combo, labels, [NEW_LABELS])
        refill(self.mask_source, labels)
        refill(self.green_combo, images, [NO_LAYER])
        refill(self.blue_combo, images, [NO_LAYER])
        if self.image_combo.currentText() != before:
            self._image_changed()
        if self.model is not None and self.session is None and self.image_layer is not None:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self._ready_for_clicks)  # after napari has finished adding the layer

    def _ready_for_clicks(self):
        """A model and an image: make the prompt layers so that the next click segments."""
        if self._closed or self.model is None or self.session is not None or self.image_layer is None:
            return
        self._guard(self.ensure_session)

    @property
    def image_layer(self):
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _axis_label(self, axis: int) -> str:
        """The name napari gives a data axis of the image layer, or "" when it has none."""
        layer = self.image_layer
        labels = tuple(getattr(layer, "axis_labels", ()) or ())
        text = str(labels[axis]) if axis < len(labels) else ""
        return "" if not text or text.lstrip("-").isdigit() or text.startswith("axis") else text

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
        self.channels_edit.setEnabled(bool(layer.rgb))
        self._axis_changed()

    def _axis_changed(self):
        """A new tracked axis: name it, give the other axis of a 4-D stack its name and range."""
        layer = self.image_layer
        if layer is None:
            return
        name = self._axis_label(self.axis_spin.value()).lower()
        if name in ("z", "t", "time"):
            self.axis_kind.blockSignals(True)
            self.axis_kind.setCurrentText("z" if name == "z" else "time")
            self.axis_kind.blockSignals(False)
        lay = self._current_layout()
        others = lay.other_axes
        self.fixed_spin.setEnabled(bool(others))
        self.follow_check.setEnabled(bool(others))
        if others:
            a = others[0]
            self.fixed_label.setText(f"{self._axis_label(a) or 'other'} (axis {a})")
            self.fixed_spin.blockSignals(True)
            self.fixed_spin.setRange(0, max(0, lay.shape[a] - 1))
            self.fixed_spin.blockSignals(False)
        else:
            self.fixed_label.setText("other axis")
        self._axis_named()
        self._reset_session()
        self._step_changed()

    def _axis_named(self):
        self.propagate_section.toggle.setText(f"Propagate through {'z' if self.unit == 'slices' else 'time'}")
        self._update_quality()

    def _step_changed(self, *_):
        """The viewer's sliders moved: follow them on the other axis of a 4-D stack."""
        if self.follow_check.isChecked() and self.fixed_spin.isEnabled() and self.image_layer is not None:
            others = self._current_layout().other_axes
            if others:
                offset = self.viewer.dims.ndim - self.image_layer.ndim
                value = int(self.viewer.dims.current_step[others[0] + offset])
                if value != self.fixed_spin.value():
                    self.fixed_spin.setValue(value)
        self._update_quality()

    def _channels_changed(self, *_):
        """New channel choice: rebuild the session and replay its prompts (labels stay)."""
        if self.session is not None:
            self._guard(self.reread_contrast)

    def _engine_input(self):
        """What SAM 2 reads: ``(array-like, has channel axis, contrast limits, channels)``.

        Contrast limits come from the layers (what you see is what SAM 2 gets): one pair for a
        gray or RGB layer, one pair per layer when other layers feed green and blue.
        """
        layer = self.image_layer
        if layer is None:
            raise ValueError("add an image layer first (File ▸ Open, or File ▸ Open Sample ▸ SAM 2)")

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
            lay.fixed = {a: (self.fixed_spin.value() if i == 0 else 0) for i, a in enumerate(others)}
        return lay

    def _labels_changed(self, *_):
        name = self.labels_combo.currentText()
        if name != NEW_LABELS and name in self.viewer.layers:
            self._use_labels(self.viewer.layers[name])

    def _use_labels(self, layer):
        if self.labels_layer is not None:
            self.labels_layer.events.paint.disconnect(self._user_painted)
        self.labels_layer = layer
        self.core.set_labels(layer.data if isinstance(layer.data, np.ndarray) else None)
        self.view.set_layer(layer)
        layer.events.paint.connect(self._user_painted)

    def _user_painted(self, *_):
        self.core.forget_where()  # a brush stroke: look where the objects are again

    def _ensure_labels(self):
        lay = self.layout_
        if self.labels_layer is not None and self.labels_layer in self.viewer.layers \
                and self.labels_layer.data.shape == lay.labels_shape:
            if self.core.labels is not self.labels_layer.data:
                self._use_labels(self.labels_layer)
            return self.labels_layer
        img = self.image_layer
        nd = lay.ndim
        axis_labels = list(img.axis_labels[:nd])
        if not lay.is_single_image:
            axis_labels[lay.video_axis] = "z" if self.unit == "slices" else "t"
        layer = self.viewer.add_labels(
            np.zeros(lay.labels_shape, np.uint16), name="SAM 2 labels", scale=img.scale[:nd],
            translate=img.translate[:nd], units=img.units[:nd], axis_labels=axis_labels,
            metadata=dict(img.metadata),
        )
        self._use_labels(layer)
        self.labels_combo.setCurrentText(layer.name)
        return layer

    # ------------------------------------------------------------------ model and session
    def _browse_model(self):
        path, _ = QFileDialog.getOpenFileName(self, "SAM 2 checkpoint", "", "Checkpoints (*.pt *.pth *.safetensors *.json)")
        if path:
            self.model_path.setText(str(Path(path).parent if path.endswith(".json") else path))

    def load_model(self, then=None):
        """Load the chosen model in a worker; then the prompt layers are ready for a click.

        Download and loading progress goes to a bar in napari's activity dock and to the model
        line; ``then`` is called on the GUI thread once the model is there (not after a failure).
        """
        from napari_sam2._qt.model_loading import load_in_worker

        load_in_worker(self, then)

    def _model_loaded(self, model, source):
        self.model = model
        self.model_status.setText(f"{Path(str(source)).name} on {model.device}")
        self._reset_session()
        if self.image_layer is not None:
            self.ensure_session()  # the labels and prompt layers appear: the next click segments
            self.image_section.set_expanded(False)
            self.model_section.set_expanded(False)
            self.say(f"model loaded: click on an object to segment it ({self.unit} "
                     f"0-{self.layout_.n_frames - 1}); N for a new object")
        else:
            self.say("model loaded: open an image to segment")

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
            self.say("contrast re-read: prompts replayed")

        self._replay(saved, done, progress="Re-reading contrast")

    def _replay(self, session_file, done, progress):
        """Replay a session file's prompts in a worker, then call ``done(session_file)``.

        The engine session (and any layer it needs) is made here, on the GUI thread; the worker
        only runs the prompts.
        """
        from napari_sam2.io.session_file import replay

        session = self.ensure_session()

        def work():
            replay(session_file, session)
            return session_file

        self.tasks.submit(work, done, progress=progress)

    # ------------------------------------------------------------------ objects
    def next_free_id(self) -> int:
        return self.core.next_free_id()

    def new_object(self, name: str | None = None) -> int:
        """Add an object with the next free label id, make it active, get ready for clicks."""
        if self.model is not None and self.image_layer is not None:
            self.ensure_session()  # the prompt layers exist from here on
        obj_id = self.core.add_object(name)
        self._add_object_item(obj_id, self.core.objects[obj_id])
        if self.prompts.points is not None and self.prompts.points in self.viewer.layers:
            self.prompts.select_points()
        self.say(f"{self.core.objects[obj_id]}: click on it")
        return obj_id

    def _add_object_item(self, obj_id, name):
        from qtpy.QtGui import QColor, QIcon, QPixmap

        self.core.objects[obj_id] = name
        item = QListWidgetItem(f"{obj_id}: {name}" if name != f"object {obj_id}" else name)
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
        self.core.active_id = None if item is None else int(item.data(Qt.ItemDataRole.UserRole))
        self.prompts.set_active(self.active_id)
        self._update_quality()

    def _object_renamed(self, item):
        obj_id = item.data(Qt.ItemDataRole.UserRole)
        if obj_id is not None:
            self.core.objects[int(obj_id)] = item.text()

    def delete_object(self):
        """Remove the active object: its prompts, its pixels (undoable) and its memory."""
        if self.active_id is not None:
            self._delete([self.active_id])

    def delete_selected(self):
        """Remove every selected object of the list (one undoable step)."""
        ids = [int(i.data(Qt.ItemDataRole.UserRole)) for i in self.object_list.selectedItems()]
        self._delete(ids or ([self.active_id] if self.active_id is not None else []))

    def _delete(self, ids):
        for obj_id in ids:
            self.prompts.remove_object(obj_id)
        self.core.delete_objects(ids)
        for row in reversed(range(self.object_list.count())):
            if int(self.object_list.item(row).data(Qt.ItemDataRole.UserRole)) in ids:
                self.object_list.takeItem(row)
        if self.labels_layer is not None:
            self.labels_layer.refresh()
        self.say(f"deleted {', '.join(map(str, ids))}" if ids else "no object selected")

    def _pick_object(self, viewer, event):
        """Alt-click on the canvas: select the object under the cursor (whatever layer is active)."""
        if "Alt" not in [str(getattr(m, "name", m)) for m in event.modifiers] or self.labels_layer is None:
            return
        value = self.labels_layer.get_value(event.position, world=True)
        obj_id = int(value) if value is not None and not isinstance(value, tuple) else 0
        for row in range(self.object_list.count()):
            item = self.object_list.item(row)
            if int(item.data(Qt.ItemDataRole.UserRole)) == obj_id:
                self.object_list.setCurrentItem(item)
                self.say(f"selected {self.objects[obj_id]}")
                break
        else:
            self.say("Alt-click on an object's mask selects it; there is none here")
        event.handled = True

    def ensure_active(self) -> int:
        if self.active_id is None:
            self.new_object()
        return self.active_id

    # ------------------------------------------------------------------ frames
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

    def _on_screen(self, frame: int) -> bool:
        """Whether ``frame`` (with the fixed axes of this session) is the one the viewer shows."""
        lay = self.layout_
        if lay is None or lay.is_single_image:
            return True
        offset = self.viewer.dims.ndim - self.image_layer.ndim
        step = self.viewer.dims.current_step
        return all(isinstance(i, slice) or int(step[a + offset]) == i
                   for a, i in enumerate(lay.index(frame)))

    def _show(self, edit, now=True):
        if edit is not None:
            frame = 0 if self.layout_.is_single_image else edit.index[self.layout_.video_axis]
            self.view.written(edit.index, edit.box, self._on_screen(int(frame)), now=now)

    # ------------------------------------------------------------------ prompts
    def run_prompt(self, frame: int, obj_id: int, call, label: str):
        """Run one engine prompt call in a worker and paint the mask it returned on that frame."""
        session = self.ensure_session()  # here, on the GUI thread: it may add layers
        core = self.core

        def work():
            mask = call(session)
            if mask is None:  # a cleared prompt: what the engine has left (maybe nothing)
                mask = core.engine_mask(frame, obj_id)
            return core.prepare(frame, {obj_id: np.asarray(mask, bool)})

        def paint(write):
            edit = core.apply(write)
            core.push_run(EditRun(label, [edit] if edit is not None else []))
            self._show(edit)
            self._update_quality()
            self.say(f"{self.objects.get(obj_id, obj_id)}: {label} on {self.unit[:-1]} {frame}")

        self.tasks.submit(work, paint, progress=None)

    def mask_from_labels(self):
        """Prompt the active object with an object of the chosen Labels layer on this frame."""
        name = self.mask_source.currentText()
        if name not in self.viewer.layers:
            raise ValueError("choose a Labels layer holding the seed mask (Objects ▸ Use as mask)")
        session = self.ensure_session()
        obj_id = self.ensure_active()
        frame = self.current_frame()
        source_id = self.mask_id.value() or obj_id
        seed = np.asarray(self.viewer.layers[name].data[self.layout_.index(frame)]) == source_id
        if seed.shape != tuple(session.frame_shape):
            raise ValueError("the seed Labels layer does not have the image's shape")
        if not seed.any():
            raise ValueError(f"label {source_id} is not on {self.unit[:-1]} {frame} of '{name}'")
        self.prompts.record_mask(frame, obj_id)
        self.run_prompt(frame, obj_id, lambda s: s.add_mask(frame, obj_id, seed), "mask")

    def seed_from_labels(self):
        """Turn every label of the chosen Labels layer on this frame into an object (ids kept)."""
        name = self.mask_source.currentText()
        if name not in self.viewer.layers:
            raise ValueError("choose a Labels layer holding the objects (Objects ▸ Seed from labels)")
        session = self.ensure_session()
        frame = self.current_frame()
        plane = np.asarray(self.viewer.layers[name].data[self.layout_.index(frame)])
        if plane.shape != tuple(session.frame_shape):
            raise ValueError(f"'{name}' does not have the image's shape: choose a Labels layer of this stack")
        if not plane.any():
            raise ValueError(f"'{name}' has no labels on {self.unit[:-1]} {frame}")
        core = self.core

        def work():
            ids = session.add_label_image(frame, plane)
            masks = {i: core.engine_mask(frame, i) for i in ids}
            return ids, core.prepare(frame, masks)

        def done(result):
            ids, write = result
            for obj_id in ids:
                if obj_id not in self.objects:
                    self._add_object_item(obj_id, f"object {obj_id}")
            self.prompts.record_mask(frame, ids[0])
            edit = core.apply(write)
            core.push_run(EditRun("seed", [edit] if edit is not None else []))
            self._show(edit)
            self._update_quality()
            self.say(f"seeded {len(ids)} objects from '{name}' on {self.unit[:-1]} {frame} "
                     f"(ids {', '.join(map(str, ids[:6]))}{'…' if len(ids) > 6 else ''})")

        self.tasks.submit(work, done)

    def find_objects(self, points_per_side: int = 16):
        """Find the objects on this frame (SAM 2's automatic masks) into a Labels layer to review.

        Nothing becomes an object yet: edit the layer if needed (erase, merge, paint), then
        press "Seed from labels" with it.
        """
        session = self.ensure_session()
        frame = self.current_frame()
        self.say(f"finding objects on {self.unit[:-1]} {frame}…")

        def work():
            return session.segment_everything(frame, points_per_side=points_per_side)

        def done(found):
            lay = self.layout_
            name = "SAM 2 found objects"
            if name in self.viewer.layers and self.viewer.layers[name].data.shape == lay.labels_shape:
                layer = self.viewer.layers[name]
            else:
                img = self.image_layer
                layer = self.viewer.add_labels(
                    np.zeros(lay.labels_shape, found.dtype if found.dtype.itemsize >= 2 else np.uint16),
                    name=name, scale=img.scale[:lay.ndim], translate=img.translate[:lay.ndim],
                    opacity=0.5)
            layer.data[lay.index(frame)] = found
            layer.refresh()
            self._refresh_layer_choices()
            self.mask_source.setCurrentText(name)
            n = len(np.unique(found[found > 0]))
            self.prompts.select_points()
            self.say(f"found {n} objects on {self.unit[:-1]} {frame} in '{name}': review them, "
                     "then press Seed from labels")

        self.tasks.submit(work, done, progress="SAM 2: finding objects")

    def toggle_polarity(self):
        self.positive_check.setChecked(not self.positive_check.isChecked())

    def undo_prompt(self):
        """Undo the last prompt (click, box, mask) of the session and redraw its frame."""
        if self.session is None:
            return self.say("nothing to undo")
        core = self.core

        def done(result):
            res, write = result
            if res is None:
                return self.say("nothing to undo")
            frame, obj_id = res
            self.prompts.after_undo(frame, obj_id)
            if write is not None:
                edit = core.apply(write)
                core.push_run(EditRun("undo", [edit] if edit is not None else []))
                self._show(edit)
            self._update_quality()
            self.say(f"undid the last prompt of object {obj_id}"
                     + ("" if frame is None else f" on {self.unit[:-1]} {frame}"))

        self.tasks.submit(core.undo_prompt_prepared, done)

    def _paint_object_frame(self, frame, obj_id, label="prompt"):
        run = self.core.paint(frame, {obj_id: self.core.engine_mask(frame, obj_id)}, label)
        for edit in run.edits:
            self._show(edit)
        self._update_quality()

    def _repaint_prompted_frames(self):
        for obj_id in self.session.objects:
            for frame in self.session.prompted_frames(obj_id):
                self._paint_object_frame(frame, obj_id, label="session")

    # ------------------------------------------------------------------ propagation
    def propagate(self):
        """Propagate all (or the selected) objects; results stream into the labels."""
        from napari_sam2._qt.propagation import start_propagation

        start_propagation(self)

    def cancel(self):
        """Stop the propagation after the current frame; finished frames stay."""
        self._cancel = True
        if self.session is not None and hasattr(self.session, "cancel"):
            self.session.cancel()  # the engine stops after the frame it is computing
        self.tasks.quit()

    def revert_last_run(self):
        """Put the labels back exactly as they were before the last propagation run.

        The run leaves the history at once; its pixels are put back in the worker (a masked copy
        per frame), then the labels are redrawn.
        """
        run = self.core.take_last_run()
        if run is None:
            self.say("no propagation run to revert")
            return None
        n = len(self.core.frames_of(run))

        def done(_):
            if self.labels_layer is not None:
                self.labels_layer.refresh()
            self.say(f"reverted the last propagation: {n} {self.unit} back as they were "
                     "(the tracking stays in the session: Propagate redoes it)")
            self._update_quality()

        self.tasks.submit(lambda: self.core.undo_run(run), done)
        return run

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
        self.quality_label.setText(f"{done} {self.unit} tracked, {len(flagged)} flagged"
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

    # ------------------------------------------------------------------ work and errors
    def _submit(self, fn, on_result, progress=None, on_yield=None, on_finish=None):
        self.tasks.submit(fn, on_result, progress=progress, on_yield=on_yield, on_finish=on_finish)

    def wait(self, timeout: float = 60.0) -> None:
        """Process Qt events until queued work is done (for scripts and tests)."""
        self.tasks.wait(timeout)

    def _error(self, err):
        from napari.utils.notifications import show_error

        self.last_error = err
        self.status.error(f"{err}")
        show_error(f"SAM 2: {str(err).splitlines()[0] if str(err) else type(err).__name__}")

    # ------------------------------------------------------------------ shortcuts
    def _shortcut(self, method):
        def handler(viewer):
            if self._closed:
                return
            self._guard(getattr(self, method))

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
        self.tasks.clear()
        self.unbind_shortcuts()
        self.prompts.disconnect()
        for emitter, slot in ((self.viewer.layers.events.inserted, self._refresh_layer_choices),
                              (self.viewer.layers.events.removed, self._refresh_layer_choices),
                              (self.viewer.dims.events.current_step, self._step_changed)):
            emitter.disconnect(slot)
        if self._pick_object in self.viewer.mouse_drag_callbacks:
            self.viewer.mouse_drag_callbacks.remove(self._pick_object)

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
