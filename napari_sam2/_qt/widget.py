"""The "SAM 2 segmentation" dock widget: prompts in napari layers, masks in a Labels layer.

One click reads down three files: a point added to the "SAM 2 points" layer reaches
:meth:`PromptLayers.sync_points <napari_sam2._qt.prompt_layers.PromptLayers.sync_points>`,
which hands the engine call to :meth:`Sam2Widget.run_prompt`; in a worker the Qt-free
:meth:`Annotator.prompt <napari_sam2.annotator.Annotator.prompt>` runs it on the
:class:`~napari_sam2.Sam2Session` and crops the mask it returned to the box that changes
(:mod:`napari_sam2.label_edits`); back on the GUI thread :meth:`Annotator.commit
<napari_sam2.annotator.Annotator.commit>` copies the crop into the labels as one undoable step
and :class:`~napari_sam2._qt.labels_view.LabelsView` shows it (only the changed box, only when on
screen). Propagation streams frame by frame the same way.

The dock's other parts each have a module: the Image section and target labels
(:mod:`~napari_sam2._qt.image_inputs`), the Model section (:mod:`~napari_sam2._qt.model_loading`),
the object list (:mod:`~napari_sam2._qt.object_list`), seeding from Labels layers
(:mod:`~napari_sam2._qt.label_seeds`), the Propagate section (:mod:`~napari_sam2._qt.propagation`),
the quality strip (:mod:`~napari_sam2._qt.quality_strip`), files and export
(:mod:`~napari_sam2._qt.files`), keys (:mod:`~napari_sam2._qt.shortcuts`); the widgets themselves
are laid out in :mod:`~napari_sam2._qt.panels`. Engine work runs one task at a time in napari
thread workers (:mod:`~napari_sam2._qt.tasks`); ``synchronous = True`` runs it inline (for tests
and scripts).
"""

from __future__ import annotations

from qtpy.QtCore import QEvent
from qtpy.QtWidgets import QWidget

from napari_sam2._qt.files import DockFiles
from napari_sam2._qt.image_inputs import ImageInputs
from napari_sam2._qt.label_seeds import LabelSeeds
from napari_sam2._qt.labels_view import LabelsView
from napari_sam2._qt.model_loading import ModelLoading
from napari_sam2._qt.object_list import ObjectList
from napari_sam2._qt.panels import MODEL_CHOICES, build_dock
from napari_sam2._qt.prompt_layers import PromptLayers
from napari_sam2._qt.propagation import PropagationPanel
from napari_sam2._qt.quality_strip import QualityPanel
from napari_sam2._qt.sections import counted, listed
from napari_sam2._qt.shortcuts import SHORTCUTS, Shortcuts
from napari_sam2._qt.tasks import TaskQueue
from napari_sam2.annotator import Annotator, Unseeding

__all__ = ["Sam2Widget", "MODEL_CHOICES", "SHORTCUTS"]


class Sam2Widget(ImageInputs, ModelLoading, ObjectList, LabelSeeds, PropagationPanel, QualityPanel,
                 DockFiles, Shortcuts, QWidget):
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
        self.model_progress: list = []
        self._cancel = False
        self._docked = False
        self._closed = False
        self.ui = build_dock(self)
        self.__dict__.update(vars(self.ui))  # the dock's widgets by name: self.load_button...
        self._connect()
        self.prompts = PromptLayers(self)
        self.viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        self.viewer.layers.events.removed.connect(self._refresh_layer_choices)
        self.viewer.dims.events.current_step.connect(self._step_changed)
        self.viewer.mouse_drag_callbacks.append(self._pick_object)
        self._refresh_layer_choices()
        self.bind_shortcuts()

    # ------------------------------------------------------------------ state (in the core)
    model = property(lambda self: self.core.model, lambda self, v: setattr(self.core, "model", v))
    session = property(lambda self: self.core.session, lambda self, v: setattr(self.core, "session", v))
    stack_layout = property(lambda self: self.core.layout, lambda self, v: setattr(self.core, "layout", v),
                            doc="How the image layer's axes map onto SAM 2 frames (None: no session).")
    objects = property(lambda self: self.core.objects)
    runs = property(lambda self: self.core.runs)
    active_id = property(lambda self: self.core.active_id)
    synchronous = property(lambda self: self.tasks.synchronous,
                           lambda self, v: setattr(self.tasks, "synchronous", bool(v)))

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
        self.labels_combo.activated.connect(self._new_labels_chosen)  # a user's choice only
        self.object_list.currentItemChanged.connect(self._object_selected)
        self.object_list.itemChanged.connect(self._object_renamed)
        self.positive_check.toggled.connect(lambda on: self.prompts.set_polarity(on))
        self.strip.frame_clicked.connect(self.go_to_frame)
        self.cancel_button.clicked.connect(lambda *_: self.cancel())
        for button, slot in ((self.reread_button, self.reread_contrast),
                             (self.browse_button, self._browse_model),
                             (self.load_button, self.load_chosen_model),
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
                             (self.export_button, self.show_export_form)):
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

    def _error(self, err):
        from napari.utils.notifications import show_error

        self.last_error = err
        self.status.error(f"{err}")
        show_error(f"SAM 2: {str(err).splitlines()[0] if str(err) else type(err).__name__}")

    def _dialog_parent(self) -> QWidget:
        """The dock itself, as the parent of the file dialogs its sections open."""
        return self

    def wait(self, timeout: float = 60.0) -> None:
        """Process Qt events until queued work is done (for scripts and tests)."""
        self.tasks.wait(timeout)

    # ------------------------------------------------------------------ the engine session
    def _reset_session(self):
        """Forget the engine session (a new image, axis or model); labels and prompts stay."""
        self.session = None
        self.stack_layout = None
        self.prompts.forget_sent()

    def ensure_session(self):
        """The engine session for the current image, model and axes (built on first use)."""
        if self.session is not None:
            self._bring_back_layers()
            return self.session
        if self.model is None:
            raise ValueError("load a model first (Model ▸ Load model)")
        from napari_sam2 import Sam2Session

        data, has_channels, contrast, channels = self._engine_input()
        lay = self._current_layout(data.shape, has_channels)
        self.session = Sam2Session(self.model, lay.frames(data), channels=channels, contrast=contrast,
                                   rgb=has_channels if lay.is_single_image else None)
        self.stack_layout = lay
        self.session_channels = channels
        pairs = [contrast] if isinstance(contrast, tuple) else contrast
        self.contrast_label.setText(", ".join(f"{lo:g} – {hi:g}" for lo, hi in pairs))
        self.stop_spin.setMaximum(max(0, lay.n_frames - 1))
        self.start_spin.setMaximum(max(0, lay.n_frames - 1))
        self._ensure_labels()
        self.prompts.ensure_layers()
        return self.session

    def _bring_back_layers(self):
        """Bring back this session's labels and prompt layers if they were removed from the viewer.

        As they were: the masks and prompts in them are the session's, and a new empty layer
        would lose them (and make the next click look like the removal of every other prompt).
        """
        back = []
        for layer in (self.labels_layer, self.prompts.points, self.prompts.shapes):
            if layer is not None and layer not in self.viewer.layers:
                self.viewer.add_layer(layer)
                back.append(layer.name)
                if layer is self.labels_layer:  # the target row showed "(new layer)" meanwhile
                    self.labels_combo.setCurrentText(layer.name)
        if back:
            if self.prompts.points in self.viewer.layers:
                self.prompts.select_points()
            from napari.utils.notifications import show_info

            # a notification too: the status line is soon overwritten by the action that follows
            note = (f"{listed(back)} {'was' if len(back) == 1 else 'were'} removed from the "
                    "viewer: added back as they were, as this session's masks and prompts are there "
                    "(to start again, delete the objects)")
            self.say(note)
            show_info(note)

    def reread_contrast(self, what: str = "contrast re-read"):
        """Rebuild the session with the image layer's contrast limits and replay its prompts.

        Also after a new channel choice (``what`` says which). An input the session could not
        be built from (a channel the image lacks) is refused first: the session stays as it was.
        """
        old = self.session
        if old is not None:
            self._check_engine_input()
        self._reset_session()
        if old is None or not old.objects:
            return
        from napari_sam2.io.session_file import session_from_engine

        saved = session_from_engine(old)
        saved.settings.contrast = None

        def done(_):
            self.prompts.mark_all_sent()
            self._repaint_prompted_frames()
            self.say(f"{what}: prompts replayed")

        self._replay(saved, done, progress="Re-reading contrast")

    def _replay(self, session_file, done, progress):
        """Replay a session file's prompts in a worker, then call ``done(session_file)``.

        The engine session (and any layer it needs) is made here, on the GUI thread; the worker
        only runs the prompts. If that session ended meanwhile (the image was removed, another
        axis or model was chosen), ``done`` is not called: the prompts are not in the current one.
        """
        from napari_sam2.io.session_file import replay

        session = self.ensure_session()

        def work():
            replay(session_file, session)
            return session_file

        def replayed(result):
            if self.session is not session:
                self.say(f"{progress} stopped: SAM 2's session ended meanwhile (the image, axis "
                         "or model changed)")
                return
            done(result)

        self.tasks.submit(work, replayed, progress=progress)

    # ------------------------------------------------------------------ frames
    def current_frame(self) -> int:
        """The frame (time point or slice) the viewer shows."""
        lay = self.stack_layout or self._current_layout()
        if lay.is_single_image:
            return 0
        offset = self.viewer.dims.ndim - self.image_layer.ndim
        return int(self.viewer.dims.current_step[lay.video_axis + offset])

    def go_to_frame(self, frame: int):
        """Move the viewer's slider of the tracked axis to ``frame``."""
        lay = self.stack_layout or self._current_layout()
        if lay.is_single_image:
            return
        offset = self.viewer.dims.ndim - self.image_layer.ndim
        self.viewer.dims.set_current_step(lay.video_axis + offset, int(frame))

    def _show(self, edit, now=True):
        """Show a label write (a :class:`~napari_sam2.label_edits.FrameEdit`; None: nothing).

        A write into another Labels layer than the target (an undo or Delete of masks written
        before the user chose this target) redraws that layer.
        """
        if edit is None:
            return
        if self._written_elsewhere(edit):
            for layer in self.layers_holding([edit.target]):
                layer.refresh()
            return
        self.view.written(self._plane_on_screen(edit.index), now=now, box=edit.array_box)

    def _written_elsewhere(self, edit) -> bool:
        """Whether a write went into another label array than the current target."""
        return edit.target is not None and edit.target is not self.core.labels

    def layers_holding(self, arrays: list) -> list:
        """The viewer's layers whose data is one of ``arrays`` (label arrays written into)."""
        return [layer for layer in self.viewer.layers if any(layer.data is a for a in arrays)]

    def _show_edits(self, edits) -> None:
        """Show several label writes, with one redraw (of each other layer written into, too)."""
        elsewhere: dict[int, object] = {}
        for edit in edits:
            if edit is not None and self._written_elsewhere(edit):
                elsewhere[id(edit.target)] = edit.target
            else:
                self._show(edit, now=False)
        for layer in self.layers_holding(list(elsewhere.values())):
            layer.refresh()
        self.view.flush()

    def on_frame(self, frame: int) -> str:
        """" on frame 3" / " on slice 3" for messages; nothing for a single image."""
        lay = self.stack_layout
        return "" if lay is not None and lay.is_single_image else f" on {self.unit[:-1]} {frame}"

    def _plane_on_screen(self, index) -> bool:
        """Whether the viewer shows the label plane ``index`` (ints and slices).

        By the plane's own index: the session that wrote it may have ended since (the user went
        to another slice of a 4-D stack, or removed the image).
        """
        img = self.image_layer
        if img is None:
            return False
        offset = self.viewer.dims.ndim - img.ndim
        step = self.viewer.dims.current_step
        return all(isinstance(i, slice) or (0 <= a + offset < len(step) and int(step[a + offset]) == i)
                   for a, i in enumerate(index))

    # ------------------------------------------------------------------ prompts
    def run_prompt(self, frame: int, obj_id: int, call, label: str, then=None):
        """Run one engine prompt ``call(session)`` in a worker and paint the mask it returned.

        ``then()``: called on the GUI thread once the engine has taken the prompt.
        """
        session = self.ensure_session()  # here, on the GUI thread: it may add layers
        core, layout = self.core, self.stack_layout

        def paint(write):
            if then is not None:
                then()
            self._show(core.commit(write, label))
            self._update_quality()
            self.say(f"{self.objects.get(obj_id, obj_id)}: {label}{self.on_frame(frame)}")

        if self.tasks.busy:  # e.g. a click during a propagation: it runs once that is done
            self.say(f"{self.objects.get(obj_id, obj_id)}: {label}{self.on_frame(frame)} waits "
                     "for the running task (Cancel stops a propagation)")
        self.tasks.submit(lambda: core.prompt(frame, obj_id, call, session, layout), paint)

    def toggle_polarity(self):
        """Switch between positive (on the object) and negative (background) clicks."""
        self.positive_check.setChecked(not self.positive_check.isChecked())

    def undo_prompt(self):
        """Undo the last prompt (click, box, mask) of the session and redraw its frame."""
        if self.session is None:
            return self.say("nothing to undo")
        core, session, layout = self.core, self.session, self.stack_layout

        def done(result):
            res, write = result
            if res is None:
                return self.say("nothing to undo")
            frame, undone = res
            if frame is None:  # a Delete undone: the engine has the object back
                return self._undeleted(undone if isinstance(undone, tuple) else (undone,), session)
            self.prompts.after_undo(frame, undone, session)
            if isinstance(write, Unseeding):  # a seeding: the objects it made go
                self._remove_objects(write.gone, pixels=False)  # list and prompts; pixels here:
                self._show_edits(core.finish_unseeding(write))  # the frame as before, tracked pixels off
                what = f"the seeding of {counted(len(undone))}"
                kept = len(undone) - len(write.gone)  # objects that existed before: prompts back
                many = "one" if kept == 1 else str(kept)
                after = f"; {many} of them had earlier prompts, back now" if kept else ""
            else:
                edit = None if write is None else core.commit(write, "undo")
                self._show(edit)
                where = self.layers_holding([edit.target]) if edit and self._written_elsewhere(edit) else []
                what = f"the last prompt of object {undone}"
                after = f" in '{where[0].name}'" if where else ""
            self._update_quality()
            self.say(f"undid {what}{self.on_frame(frame)}{after}")

        self.tasks.submit(lambda: core.undo_prompt_prepared(session, layout), done)

    def _repaint_prompted_frames(self):
        """Paint the engine's masks on every prompted frame (after a replay)."""
        for obj_id in self.session.objects:
            for frame in self.session.prompted_frames(obj_id):
                run = self.core.paint(frame, {obj_id: self.core.engine_mask(frame, obj_id)}, "session")
                for edit in run.edits:
                    self._show(edit)
        self._update_quality()

    # ------------------------------------------------------------------ closing
    def teardown(self):
        """Stop work, unbind the shortcuts and stop listening to the viewer (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self.cancel()
        self.tasks.quit()
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
