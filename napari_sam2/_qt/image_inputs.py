"""The dock's inputs: which image layer SAM 2 reads, through which axis, and where masks go.

The Image section picks the image layer, the tracked axis (and what it is: time or z), the index
of the other axis of a 4-D stack (following the viewer's slider by default) and the channels;
:meth:`ImageInputs._engine_input` and :meth:`ImageInputs._current_layout` turn that choice into
what the engine session is built from. The Objects section's "labels" choice is the Labels layer
masks are written into; a "SAM 2 labels" layer with the image's scale, units and axis names is
made when there is none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from napari_sam2._qt.labels_view import unwrapped
from napari_sam2.stack_layout import LayerChannels, StackLayout, parse_channels

if TYPE_CHECKING:
    from napari_sam2._qt.dock_host import DockHost
else:
    DockHost = object  # the sections' shared state is declared for type checkers only

__all__ = ["ImageInputs", "NEW_LABELS", "NO_LAYER"]

NEW_LABELS = "(new layer)"
NO_LAYER = "(none)"


class ImageInputs(DockHost):
    """Image, axes, channels and target labels of :class:`~napari_sam2._qt.widget.Sam2Widget`."""

    @property
    def image_layer(self):
        """The napari Image layer chosen in the Image section (None: there is none)."""
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @property
    def unit(self) -> str:
        """What the tracked axis holds, in words: "frames" or "slices"."""
        return "slices" if self.axis_kind.currentText() == "z" else "frames"

    # ------------------------------------------------------------------ layer choices
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
        mixed = [c.currentText() for c in (self.green_combo, self.blue_combo)]
        refill(self.image_combo, images)
        refill(self.labels_combo, labels, [NEW_LABELS])
        refill(self.mask_source, labels)
        refill(self.green_combo, images, [NO_LAYER])
        refill(self.blue_combo, images, [NO_LAYER])
        if self.image_combo.currentText() != before:
            self._image_changed()
        elif [c.currentText() for c in (self.green_combo, self.blue_combo)] != mixed:
            self._channels_changed()  # a green or blue layer was removed: SAM 2 stops reading it
        if self.model is not None and self.session is None and self.image_layer is not None:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self._ready_for_clicks)  # after napari has finished adding the layer

    def _ready_for_clicks(self):
        """A model and an image: make the prompt layers so that the next click segments."""
        if self._closed or self.model is None or self.session is not None or self.image_layer is None:
            return
        self._guard(self.ensure_session)

    # ------------------------------------------------------------------ axes
    def _axis_label(self, axis: int) -> str:
        """The name napari gives a data axis of the image layer, or "" when it has none."""
        layer = self.image_layer
        labels = tuple(getattr(layer, "axis_labels", ()) or ())
        text = str(labels[axis]) if axis < len(labels) else ""
        return "" if not text or text.lstrip("-").isdigit() or text.startswith("axis") else text

    def _image_changed(self, *_):
        layer = self.image_layer
        if layer is None:
            if self.session is not None:  # the session's image was removed from the viewer
                if self.tasks.busy:
                    self.cancel()
                self._reset_session()
                self.say("the image was removed, so SAM 2's session ended; your labels and prompts "
                         "stay: open or choose an image to go on")
            return
        data = layer.data[0] if layer.multiscale else layer.data
        nd = data.ndim - (1 if layer.rgb else 0)
        self.axis_spin.blockSignals(True)
        self.axis_spin.setRange(0, max(0, nd - 3))
        self.axis_spin.setValue(0)
        self.axis_spin.setEnabled(nd > 2)
        self.axis_spin.blockSignals(False)
        self.channels_edit.setEnabled(bool(layer.rgb))
        had_session = self.session is not None
        self._axis_changed()
        if had_session:  # the session ended with the choice of another image: say so
            self.say(f"SAM 2 now reads '{layer.name}': a new session starts with the next click or "
                     "Propagate; labels and prompts stay")

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
        single = self.image_layer is not None and self._current_layout().is_single_image
        self.propagate_section.toggle.setText(
            "Propagate (single image)" if single
            else f"Propagate through {'z' if self.unit == 'slices' else 'time'}")
        # a single image has nothing to track; Undo prompt (in the same section) still counts
        for widget in (self.direction_combo, self.selected_only, self.range_section,
                       self.propagate_button, self.revert_button, self.quality_section):
            widget.setEnabled(not single)
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

    def _current_layout(self, shape=None, has_channels=None) -> StackLayout:
        """The stack layout the Image section describes (of the image layer's data by default)."""
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

    # ------------------------------------------------------------------ channels
    def _channels_changed(self, *_):
        """New channel choice: rebuild the session and replay its prompts (labels stay)."""
        if self.session is not None:
            self._guard(self.reread_contrast, "channels changed")

    def _check_engine_input(self):
        """Raise the error a session on the Image section's input would raise, building none."""
        from napari_sam2.engine.frames import resolve_channels

        data, has_channels, _, channels = self._engine_input()
        resolve_channels(int(data.shape[-1]) if has_channels else None, channels)

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

    # ------------------------------------------------------------------ target labels
    def _labels_changed(self, *_):
        name = self.labels_combo.currentText()
        if name != NEW_LABELS and name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if unwrapped(layer) is unwrapped(self.labels_layer) and self.core.labels is layer.data:
                return  # already in use (what is known of it stays)
            self._use_labels(layer)
            if self.objects and isinstance(layer.data, np.ndarray):
                self._check_shared_ids(layer)

    def _check_shared_ids(self, layer):
        """Say so when the new target layer already holds ids of the session's objects.

        Its pixels of those ids count as the objects' from now on: a propagation or a Delete
        changes them. The layer is read in a worker (a large volume takes a moment).
        """
        from napari_sam2.label_edits import ids_present

        data, ids = layer.data, list(self.objects)

        def done(shared):
            if shared and unwrapped(self.labels_layer) is unwrapped(layer):
                some = ", ".join(map(str, shared[:6])) + ("…" if len(shared) > 6 else "")
                self.say(f"'{layer.name}' already holds {'id' if len(shared) == 1 else 'ids'} {some} "
                         f"of SAM 2 objects: those pixels now count as the objects' (a propagation or "
                         f"Delete changes them); choose '{NEW_LABELS}' to keep them apart")

        self.tasks.submit(lambda: ids_present(data, ids), done)

    def _let_go_of_labels(self):
        """Stop writing into the target Labels layer (it stays as it is); a new one comes next."""
        if self.labels_layer is not None:
            self.labels_layer.events.paint.disconnect(self._user_painted)
        self.labels_layer = None
        self.core.set_labels(None)
        self.view.set_layer(None)

    def _new_labels_chosen(self, *_):
        """The user chose "(new layer)": the next masks go into a new Labels layer."""
        old = self.labels_layer
        if self.labels_combo.currentText() != NEW_LABELS or old is None:
            return
        self._let_go_of_labels()
        if self.session is not None:  # made now, so that the row names it
            self.say(f"masks now go into '{self._ensure_labels().name}'; '{old.name}' keeps its labels")
        else:
            self.say(f"masks will go into a new layer; '{old.name}' keeps its labels")

    def _use_labels(self, layer, highest: int | None = None):
        if self.labels_layer is not None:
            self.labels_layer.events.paint.disconnect(self._user_painted)
        self.labels_layer = layer
        self.core.set_labels(layer.data if isinstance(layer.data, np.ndarray) else None, highest)
        self.view.set_layer(layer)
        layer.events.paint.connect(self._user_painted)

    def _user_painted(self, event=None):
        # a brush stroke, fill or erase. napari's history atoms say the label painted: a masked
        # atom's ``new_value``, or the last of (indices, old values, new values); anything else
        # and the highest id is looked up again
        values: list = []
        for atom in getattr(event, "value", None) or [None]:
            if hasattr(atom, "new_value"):
                values.append(atom.new_value)
            elif isinstance(atom, tuple) and len(atom) == 3:
                values.append(atom[2])
            else:  # values unknown
                self.core.labels_painted(None)
                return
        self.core.labels_painted(values)

    def _ensure_labels(self):
        """The Labels layer masks go into: the chosen one if it fits the stack, else a new one."""
        lay = self.stack_layout
        assert lay is not None  # called only with a session, which is made with its layout
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
        # the image's scale, units and axis names: napari's File ▸ Save and our writer use them
        layer = self.viewer.add_labels(
            np.zeros(lay.labels_shape, np.uint16), name="SAM 2 labels", scale=img.scale[:nd],
            translate=img.translate[:nd], units=img.units[:nd], axis_labels=axis_labels,
            metadata=dict(img.metadata),
        )
        self._use_labels(layer, highest=0)
        self.labels_combo.setCurrentText(layer.name)
        return layer
