"""What the dock's sections read and call on the dock, declared for type checkers.

:class:`~napari_sam2._qt.widget.Sam2Widget` is put together from one class per section
(:class:`~napari_sam2._qt.image_inputs.ImageInputs`, :class:`~napari_sam2._qt.object_list.ObjectList`...)
that use each other's state through ``self``. Each section names :class:`DockHost` as its base
only when type checking (at run time the base is :class:`object`), so that a type checker knows
the widgets of :class:`~napari_sam2._qt.panels.DockWidgets`, the state set in
``Sam2Widget.__init__`` and the methods of the other sections. Nothing here runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from qtpy.QtWidgets import QWidget

from napari_sam2._qt.labels_view import LabelsView
from napari_sam2._qt.panels import DockWidgets
from napari_sam2._qt.prompt_layers import PromptLayers
from napari_sam2._qt.tasks import TaskQueue
from napari_sam2.annotator import Annotator
from napari_sam2.engine.models import Sam2Model
from napari_sam2.engine.session import Sam2Session
from napari_sam2.label_edits import EditRun, FrameEdit
from napari_sam2.stack_layout import StackLayout

__all__ = ["DockHost"]


class DockHost(DockWidgets):
    """The dock as its sections see it: its widgets, its state and the methods they share.

    The method bodies only raise: each is implemented once, in ``Sam2Widget`` or in a section.
    """

    # ---- set in Sam2Widget.__init__
    viewer: Any  # napari.Viewer (napari ships no type information)
    core: Annotator
    tasks: TaskQueue
    view: LabelsView
    prompts: PromptLayers
    ui: DockWidgets
    session_channels: list[int] | None
    labels_layer: Any  # napari.layers.Labels or None
    last_error: BaseException | None
    model_progress: list[tuple[int, int, str]]
    _cancel: bool
    _closed: bool

    # ---- the state kept in the Annotator (properties of Sam2Widget)
    model: Sam2Model | None
    session: Sam2Session | None
    stack_layout: StackLayout | None

    @property
    def objects(self) -> dict[int, str]:
        """Object id -> name."""
        raise NotImplementedError

    @property
    def runs(self) -> list[EditRun]:
        """The undo history of label writes, newest last."""
        raise NotImplementedError

    @property
    def active_id(self) -> int | None:
        """The id of the object clicks go to (None: none yet)."""
        raise NotImplementedError

    # ---- from the Image section
    @property
    def image_layer(self) -> Any:
        """The napari Image layer SAM 2 reads (None: there is none)."""
        raise NotImplementedError

    @property
    def unit(self) -> str:
        """What the tracked axis holds, in words: "frames" or "slices"."""
        raise NotImplementedError

    # ---- methods of Sam2Widget and of the sections, used across sections
    def say(self, text: str) -> None:
        """Tell the user what just happened (the dock's status line)."""
        raise NotImplementedError

    def _guard(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a button's action; a ValueError/OSError becomes the status line's message."""
        raise NotImplementedError

    def _error(self, err: BaseException) -> None:
        """Show an error on the status line and as a napari notification."""
        raise NotImplementedError

    def _dialog_parent(self) -> QWidget:
        """The dock itself, as the parent of the file dialogs its sections open."""
        raise NotImplementedError

    def ensure_session(self) -> Sam2Session:
        """The engine session for the current image, model and axes (built on first use)."""
        raise NotImplementedError

    def _reset_session(self) -> None:
        """Forget the engine session (a new image, axis or model); labels and prompts stay."""
        raise NotImplementedError

    def current_frame(self) -> int:
        """The frame (time point or slice) the viewer shows."""
        raise NotImplementedError

    def on_frame(self, frame: int) -> str:
        """" on frame 3" / " on slice 3" for messages; nothing for a single image."""
        raise NotImplementedError

    def go_to_frame(self, frame: int) -> None:
        """Move the viewer's slider of the tracked axis to ``frame``."""
        raise NotImplementedError

    def _show(self, edit: FrameEdit | None, now: bool = True) -> None:
        """Show a label write on screen."""
        raise NotImplementedError

    def _show_edits(self, edits: list[FrameEdit]) -> None:
        """Show several label writes, with one redraw."""
        raise NotImplementedError

    def _axis_label(self, axis: int) -> str:
        """The image layer's name for one of its axes ("" when it has none worth showing)."""
        raise NotImplementedError

    def layers_holding(self, arrays: list[np.ndarray]) -> list[Any]:
        """The viewer's layers whose data is one of ``arrays``."""
        raise NotImplementedError

    def run_prompt(self, frame: int, obj_id: int, call: Callable[[Sam2Session], Any], label: str,
                   then: Callable[[], Any] | None = None) -> None:
        """Run one engine prompt ``call(session)`` in a worker and paint the mask it returned."""
        raise NotImplementedError

    def _replay(self, session_file: Any, done: Callable[[Any], Any], progress: str) -> None:
        """Replay a session file's prompts in a worker, then call ``done(session_file)``."""
        raise NotImplementedError

    def _repaint_prompted_frames(self) -> None:
        """Paint again every frame that has prompts."""
        raise NotImplementedError

    def reread_contrast(self, what: str = "contrast re-read") -> None:
        """Rebuild the session with the image layer's contrast limits and replay its prompts."""
        raise NotImplementedError

    def _check_engine_input(self) -> None:
        """Raise the error a session on the Image section's input would raise, building none."""
        raise NotImplementedError

    def _refresh_layer_choices(self, *_: object) -> None:
        """Refill the layer choices of the dock from the viewer's layers."""
        raise NotImplementedError

    def _current_layout(self, shape: tuple[int, ...] | None = None,
                        has_channels: bool | None = None) -> StackLayout:
        """The stack layout the Image section describes."""
        raise NotImplementedError

    def _engine_input(self) -> tuple[Any, bool, Any, list[int] | None]:
        """What SAM 2 reads: ``(array-like, has channel axis, contrast limits, channels)``."""
        raise NotImplementedError

    def _ensure_labels(self) -> Any:
        """The Labels layer masks go into."""
        raise NotImplementedError

    def _step_changed(self, *_: object) -> None:
        """The viewer's sliders moved."""
        raise NotImplementedError

    def _update_quality(self, *_: object) -> None:
        """Redraw the quality strip and line of the active object."""
        raise NotImplementedError

    def _let_go_of_labels(self) -> None:
        """Stop writing into the target Labels layer (it stays as it is); a new one comes next."""
        raise NotImplementedError

    def ensure_active(self) -> int:
        """The active object's id (a new object when there is none)."""
        raise NotImplementedError

    def _add_object_items(self, named: list[tuple[int, str]]) -> None:
        """Add many objects to the list and select the last one."""
        raise NotImplementedError

    def _remove_objects(self, ids: list[int], message: str | None = None, session: Any = None,
                        layout: Any = None, pixels: bool = True) -> None:
        """Take objects away: list entries, prompts, engine memory and pixels (one undoable step)."""
        raise NotImplementedError

    def selected_ids(self) -> list[int]:
        """The objects selected in the list, else the active one."""
        raise NotImplementedError

    def _add_object_item(self, obj_id: int, name: str, select: bool = True) -> None:
        """Show an object in the list (and make it the active one)."""
        raise NotImplementedError

    def cancel(self) -> None:
        """Stop the running propagation after the current frame."""
        raise NotImplementedError

    def load_chosen_model(self, then: Callable[[], Any] | None = None,
                          session_precision: str | None = None) -> None:
        """Load the model chosen in the dock in a worker."""
        raise NotImplementedError

    def _image_folder(self) -> Any:
        """Where the dialogs open (a Path): the image file's folder, else the home folder."""
        raise NotImplementedError

    def _image_stem(self) -> str:
        """The image layer's name as a file name stem."""
        raise NotImplementedError

    def tracked_labels(self) -> np.ndarray:
        """The labels of the stack the session tracks."""
        raise NotImplementedError
