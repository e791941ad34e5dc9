"""The dock's files: session save / load (with the labels) and label export.

A saved session is the session file (prompts, objects, settings; the command line reads it too)
plus, next to it, the label volume as an ImageJ TIFF, referenced from the file's settings
(``extra["labels_file"]``): loading shows the masks at once, without propagating again.
Export (the form is in :mod:`~napari_sam2._qt.export_form`) writes the tracked stack's labels
with the image's voxel size and units, and says whether the tracked axis is z or time (ImageJ
slices or frames, the OME axis type). A 4-D image (a time-lapse of z-stacks) is exported whole,
as a ``(T, Z, Y, X)`` volume with both the frame interval and the z step, whichever of its
axes is tracked; a saved session keeps the tracked stack only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from qtpy.QtWidgets import QFileDialog

from napari_sam2._qt.sections import counted, listed

if TYPE_CHECKING:
    from napari_sam2._qt.dock_host import DockHost
else:
    DockHost = object  # the sections' shared state is declared for type checkers only

__all__ = ["DockFiles", "export_geometry", "labels_geometry", "source_file", "volume_geometry",
           "volume_order"]

LABELS_SUFFIX = ".labels.tif"


def source_file(layer) -> str | None:
    """The file a layer was read from, if any.

    napari records it for the files it opens (``layer.source.path``); the layers that
    ``napari-sam2 view FILE`` adds carry it in the metadata our reader gives them.
    """
    from napari_sam2._npe2_io import METADATA_KEY

    path = getattr(getattr(layer, "source", None), "path", None)
    if path:
        return str(path)
    info = (getattr(layer, "metadata", None) or {}).get(METADATA_KEY) or {}
    return str(info["source_path"]) if info.get("source_path") else None


def _geometry_of_axes(image_layer, axes: list[int], labels: list[str]):
    """The FrameGeometry of the image layer's ``axes`` (named ``labels``), with its metadata."""
    from napari_sam2._npe2_io import geometry_from_layer_meta

    scale = [float(image_layer.scale[a]) for a in axes]
    units = [image_layer.units[a] for a in axes]
    meta = {"scale": scale, "units": [None if str(u) == "pixel" else u for u in units],
            "axis_labels": labels, "metadata": dict(image_layer.metadata)}
    return geometry_from_layer_meta(meta, len(axes))


def labels_geometry(image_layer, layout, axis_kind: str):
    """The FrameGeometry of a stack's labels: voxel size and units of the image layer."""
    nd = layout.ndim
    axes = [layout.video_axis, nd - 2, nd - 1] if not layout.is_single_image else [nd - 2, nd - 1]
    labels = (["z" if axis_kind == "z" else "t"] if not layout.is_single_image else []) + ["y", "x"]
    return _geometry_of_axes(image_layer, axes, labels)


def volume_order(layout, axis_kind: str) -> tuple[int, int, int, int]:
    """The label axes of a 4-D layout in ``(T, Z, Y, X)`` order.

    The tracked axis is time (``axis_kind`` "time") or z ("z"); the other non-spatial axis is
    then the other one.
    """
    other = layout.other_axes[0]
    t, z = (other, layout.video_axis) if axis_kind == "z" else (layout.video_axis, other)
    return (t, z, layout.ndim - 2, layout.ndim - 1)


def volume_geometry(image_layer, layout, axis_kind: str):
    """The FrameGeometry of a 4-D layout's whole labels as a ``(T, Z, Y, X)`` volume.

    The frame interval and the pixel size as in :func:`labels_geometry`, the z step in
    ``z_step`` (in the pixels' unit).
    """
    return _geometry_of_axes(image_layer, list(volume_order(layout, axis_kind)), ["t", "z", "y", "x"])


def export_geometry(image_layer, layout, axis_kind: str):
    """The FrameGeometry of what Export labels… writes: a 4-D image's whole volume, else the stack."""
    if layout.ndim == 4:
        return volume_geometry(image_layer, layout, axis_kind)
    return labels_geometry(image_layer, layout, axis_kind)


class DockFiles(DockHost):
    """Session files and label export for :class:`~napari_sam2._qt.widget.Sam2Widget`."""

    # ------------------------------------------------------------------ export
    def tracked_labels(self):
        """The labels of the stack the session tracks: ``(T, Y, X)`` (or ``(Y, X)``)."""
        lay = self.stack_layout
        if self.labels_layer is None or lay is None:
            raise ValueError("there are no SAM 2 labels yet: click on an object first")
        if lay.is_single_image or lay.ndim == 3:
            return self.labels_layer.data
        index = list(lay.index(0))
        index[lay.video_axis] = slice(None)
        return self.labels_layer.data[tuple(index)]

    def export_labels(self, path, statistics: bool = False) -> Path:
        """Write the labels as ImageJ TIFF (``.tif``), OME-TIFF (``.ome.tif``) or OME-Zarr (``.zarr``).

        The file gets the image's voxel size and units, and the tracked axis as time or z. The
        labels of a 4-D image are written whole, as a ``(T, Z, Y, X)`` volume: every slice of
        the other axis, not only the tracked stack. ``statistics``: also write per-object
        statistics of the tracked stack (:mod:`napari_sam2.io.stats`) to the labels' name with
        ``.csv``, measured in a worker once the labels are written.
        """
        from napari_sam2._qt.export_form import LabelFormat, statistics_path
        from napari_sam2.io.writers import write_labels

        tracked = self.tracked_labels()  # (no labels yet: it says what to do first)
        lay = self.stack_layout
        assert lay is not None  # tracked_labels() raised otherwise
        axis_kind = self.axis_kind.currentText()
        path = Path(path)
        csv = statistics_path(path) if statistics else None
        self._check_outputs([("", path, "folder" if path.suffix.lower() == ".zarr" else "file")]
                            + ([("", csv, "file")] if csv is not None else []))
        geometry = export_geometry(self.image_layer, lay, axis_kind)
        if lay.ndim == 4:  # every slice, (T, Z, Y, X): a view
            data = np.transpose(self.labels_layer.data, volume_order(lay, axis_kind))
        else:
            data = np.asarray(tracked)
        out = write_labels(path, data, geometry)
        fmt = LabelFormat.of(out)
        unit = geometry.units[1] or "px"
        if lay.ndim == 4:
            what = (f"whole T × Z = {data.shape[0]} × {data.shape[1]} volume, "
                    f"every {abs(geometry.scale[0]):g} {geometry.units[0] or 'frame'}, "
                    f"z step {abs(geometry.z_step or 1.0):g} {unit}, ")
        elif lay.is_single_image:
            what = ""
        else:
            what = f"{'z' if geometry.axis_name == 'Z' else 'time'} axis, "
        said = (f"labels exported to {out} ({fmt.value.split(' (')[0] if fmt else 'labels'}, "
                f"{what}pixel {abs(geometry.scale[-1]):g} {unit})")
        self.say(said)
        if csv is not None:
            self._export_statistics(csv, tracked, geometry, said)
        return out

    def _export_statistics(self, csv: Path, tracked, geometry, said: str) -> None:
        """Measure the tracked stack's objects in a worker and write them to ``csv``."""
        from napari_sam2.io.stats import measure_stack

        session, names = self.session, dict(self.objects)
        lay = self.stack_layout
        assert lay is not None  # an export has a layout
        # a 4-D image's statistics describe the stack SAM 2 tracks (its slice of the other axis)
        where = "" if lay.ndim < 4 else f" of the tracked stack ({self._fixed_axis_text(lay)})"

        def measure():
            quality = {i: session.quality(i) for i in names if session is not None and i in session.objects}
            stats = measure_stack(tracked, names, geometry, names, quality)
            return stats.write_csv(csv), len(stats.rows)

        def done(result):
            written, n = result
            self.say(f"{said}; statistics{where} to {written} ({counted(n, 'rows')})")

        self.say(f"{said}; measuring the objects…")
        self.tasks.submit(measure, done, progress="Measuring objects")

    def _fixed_axis_text(self, lay) -> str:
        """``"z = 3"``: the other axis of a 4-D stack and the slice the session tracks."""
        axis = lay.other_axes[0]
        name = self._axis_label(axis) or f"axis {axis}"
        return f"{name} = {lay.index(0)[axis]}"

    def _check_outputs(self, outputs) -> None:
        """Refuse outputs that are (or hold) a file a layer of the viewer was read from.

        ``outputs``: ``(option, path, kind)`` as :func:`napari_sam2.io.atomic.check_output_paths`
        takes them. Typing the image's own file name in a form must not replace the image.
        """
        from napari_sam2.io.atomic import check_output_paths

        read: dict[str, str] = {}  # file -> the first layer read from it (the image, not its labels)
        for layer in self.viewer.layers:
            path = source_file(layer)
            if path and path not in read:
                read[path] = f"file of the layer '{layer.name}'"
        check_output_paths(outputs, [(what, path) for path, what in read.items()])

    def show_export_form(self) -> None:
        """Open the "Export labels…" form (format, file, what the tracked axis is)."""
        from napari_sam2._qt.export_form import ExportForm

        if getattr(self, "export_form", None) is None:
            self.export_form = ExportForm(self)
        self.export_form.show()

    # ------------------------------------------------------------------ sessions
    def save_session(self, path) -> Path:
        """Write the objects and prompts as a session file, and the labels next to it."""
        from napari_sam2.io.session_file import SessionSettings, session_from_engine, write_session
        from napari_sam2.io.writers import write_labels

        lay = self.stack_layout
        if self.session is None or not self.session.objects or lay is None:
            raise ValueError("there is nothing to save yet: add a prompt first")
        path = Path(path)
        labels_path = path.with_name(path.stem + LABELS_SUFFIX)
        self._check_outputs([("", path, "file"), ("", labels_path, "file")])
        # the model the masks came from, not what the Model rows show now
        model = self.model.name if self.model is not None else (
            self.model_path.text().strip() or self.model_combo.currentText())
        layers = [c.currentText() for c in (self.green_combo, self.blue_combo)
                  if c.currentText() not in ("(none)", self.image_layer.name)]
        extra: dict[str, Any] = {"channel_layers": layers} if layers else {}
        write_labels(labels_path, np.asarray(self.tracked_labels()),
                     labels_geometry(self.image_layer, lay, self.axis_kind.currentText()))
        extra["labels_file"] = labels_path.name
        extra["axis_kind"] = self.axis_kind.currentText()
        settings = SessionSettings(model=model, axis=lay.video_axis,
                                   image_layer=self.image_layer.name,
                                   channels=None if layers else self.session_channels, extra=extra)
        sf = session_from_engine(self.session, settings, names=self.objects)
        out = write_session(path, sf)
        self.say(f"session saved: {out.name} and {labels_path.name} ({counted(len(sf.objects))})")
        return out

    def _read_saved_labels(self, sf):
        name = sf.settings.extra.get("labels_file")
        if not name or sf.path is None:
            return None
        file = Path(sf.path).parent / name
        if not file.is_file():
            return None
        import tifffile

        data = tifffile.imread(file)
        want = self.tracked_labels().shape
        return data.reshape(want) if data.size == int(np.prod(want)) else None

    def load_session(self, path):
        """Read a session file, replay its prompts and show its saved labels (or repaint)."""
        from napari_sam2.io.session_file import read_session

        sf = read_session(path)
        kept = self._set_aside(f"before {Path(path).name}") if self.objects else []
        if self.model is None and sf.settings.model:
            if self.model_combo.findText(sf.settings.model) >= 0:  # a name the dock offers
                self.model_combo.setCurrentText(sf.settings.model)
                self.model_path.clear()
            else:
                self.model_path.setText(str(sf.settings.model))
        if sf.settings.axis is not None and self.axis_spin.isEnabled():
            self.axis_spin.setValue(int(sf.settings.axis))
        if sf.settings.extra.get("axis_kind") in ("time", "z"):
            self.axis_kind.setCurrentText(sf.settings.extra["axis_kind"])
        if sf.settings.channels and self.channels_edit.isEnabled():
            self.channels_edit.setText(",".join(str(c) for c in sf.settings.channels))
        names = list(sf.settings.extra.get("channel_layers", []))[:2]
        for combo, name in zip((self.green_combo, self.blue_combo), names):
            if combo.findText(name) >= 0:
                combo.setCurrentText(name)

        def done(sf):
            self._add_object_items([(obj.id, obj.name or f"object {obj.id}") for obj in sf.objects
                                    if obj.id not in self.objects])
            self.prompts.show_session_prompts(sf)
            saved = None
            try:
                saved = self._read_saved_labels(sf)
            except (OSError, ValueError) as err:
                self._error(ValueError(f"the session's labels could not be read ({err}): "
                                       "its prompted frames are repainted instead"))
            if saved is not None:
                target = self.tracked_labels()
                target[...] = saved  # a loaded session starts a new history
                self.core.forget_where()
                self.labels_layer.refresh()
                how = f"labels from {sf.settings.extra['labels_file']}"
            else:
                self._repaint_prompted_frames()
                how = f"prompted {self.unit} repainted"
            earlier = f"; the earlier objects are in {listed(kept)}" if kept else ""
            self.say(f"session loaded: {counted(len(sf.objects))}, {how}{earlier}")

        def start_replay():
            self._replay(sf, done, progress="Loading session")

        if self.model is None:  # the session's model and precision, where this device can run it
            self.load_chosen_model(then=start_replay, session_precision=sf.settings.precision)
        else:
            start_replay()

    def _set_aside(self, why: str) -> list[str]:
        """Start the dock afresh for a loaded session; nothing of the current work is lost.

        The objects, their prompts and the engine session are let go; the labels and prompt
        layers stay in the viewer as they are, hidden, those the dock made renamed
        "... (``why``)", and the loaded session gets new ones. Returns the kept layers' names.
        """
        from napari_sam2._qt.image_inputs import NEW_LABELS

        kept = []
        for layer in (self.labels_layer, self.prompts.points, self.prompts.shapes):
            if layer is not None and layer in self.viewer.layers:
                if layer.name.startswith("SAM 2 "):  # not a layer of the user's own
                    layer.name = f"{layer.name} ({why})"
                layer.visible = False  # under the loaded session's masks they would only confuse
                kept.append(layer.name)
        self.prompts.disconnect()
        self.prompts.points = self.prompts.shapes = None
        self._let_go_of_labels()
        self.labels_combo.setCurrentText(NEW_LABELS)
        self.object_list.clear()
        self.core.objects.clear()
        self.core.active_id = None
        self.core.runs.clear()
        self._reset_session()
        return kept

    def _image_folder(self) -> Path:
        """Where the dialogs open: the folder of the image's file, else the home folder.

        (Not the working directory: napari started from a desktop menu may run in "/".)
        """
        source = source_file(self.image_layer) if self.image_layer is not None else None
        return Path(source).parent if source else Path.home()

    def _image_stem(self) -> str:
        """The image layer's name as a file name stem ("image" when there is none)."""
        layer = self.image_layer
        return (re.sub(r"[^\w.-]+", "_", layer.name).strip("_") if layer is not None else "") or "image"

    def _save_dialog(self):
        default = self._image_folder() / f"{self._image_stem()}_session.json"
        path, _ = QFileDialog.getSaveFileName(self._dialog_parent(), "Save SAM 2 session", str(default),
                                              "JSON (*.json)")
        if path:
            self.save_session(path)

    def _load_dialog(self):
        path, _ = QFileDialog.getOpenFileName(self._dialog_parent(), "Load SAM 2 session",
                                              str(self._image_folder()), "JSON (*.json)")
        if path:
            self.load_session(path)
