"""The dock's "Export labels…" form: a typed magicgui form in a small dialog.

Three choices make an export: the file format (ImageJ TIFF for Fiji, OME-TIFF for Bio-Formats
and OMERO, OME-Zarr for volumes larger than memory), the file, and what the tracked axis is
(time or z: ImageJ frames or slices, the OME axis type), and, if asked, per-object statistics
in a CSV file beside the labels. The voxel size and units come from the image layer and are
shown, not asked. The file's suffix follows the format and the format the
suffix, so the two cannot disagree. The labels of a 4-D image (a time-lapse of z-stacks) are
exported whole, ``(T, Z, Y, X)``: the form then shows the z step and the frame interval.
"""

# no ``from __future__ import annotations``: magicgui reads the form's annotations as types
from enum import Enum
from pathlib import Path

__all__ = ["LabelFormat", "ExportForm", "with_format", "statistics_path"]


class LabelFormat(Enum):
    """A label file format, by its name in the form."""

    IMAGEJ_TIFF = "ImageJ TIFF (.tif)"
    OME_TIFF = "OME-TIFF (.ome.tif)"
    OME_ZARR = "OME-Zarr (.zarr)"

    @property
    def suffix(self) -> str:
        return {"IMAGEJ_TIFF": ".tif", "OME_TIFF": ".ome.tif", "OME_ZARR": ".zarr"}[self.name]

    @classmethod
    def of(cls, path) -> "LabelFormat | None":
        """The format a file name asks for (None: not a label format)."""
        name = str(path).rstrip("/\\").lower()
        if name.endswith((".ome.tif", ".ome.tiff")):
            return cls.OME_TIFF
        if name.endswith((".tif", ".tiff")):
            return cls.IMAGEJ_TIFF
        if name.endswith(".zarr"):
            return cls.OME_ZARR
        return None


def with_format(path, fmt: LabelFormat) -> Path:
    """``path`` with the suffix of ``fmt`` (any label suffix it had replaced)."""
    path = Path(str(path).rstrip("/\\"))
    name = path.name
    for old in (".ome.tiff", ".ome.tif", ".ome.zarr", ".tiff", ".tif", ".zarr"):
        if name.lower().endswith(old):
            name = name[: -len(old)]
            break
    return path.with_name((name or "labels") + fmt.suffix)


def statistics_path(labels_path) -> Path:
    """Where the statistics of a labels file go: its name with ``.csv`` for the label suffix."""
    return with_format(labels_path, LabelFormat.IMAGEJ_TIFF).with_suffix(".csv")


def _voxel_text(geometry, single_image: bool, volume=None) -> str:
    """The voxel size shown in the form; ``volume``: ``(T, Z)`` of a 4-D export."""
    t_step, dy, dx = (abs(float(s)) for s in geometry.scale)
    t_unit, unit = geometry.units
    px = f"{dy:g} × {dx:g} {unit or 'px'}"
    if single_image:
        return f"pixel {px}"
    if geometry.z_step is not None:
        whole = f"whole T × Z = {volume[0]} × {volume[1]} volume: " if volume else ""
        return (f"{whole}voxel {abs(float(geometry.z_step)):g} × {px} (z, y, x), "
                f"every {t_step:g} {t_unit or 'frame'}")
    if geometry.axis_name == "Z":
        return f"voxel {t_step:g} × {px} (z, y, x)"
    return f"pixel {px}, every {t_step:g} {t_unit or 'frame'}"


class ExportForm:
    """The export dialog of a dock (made once, filled from the dock each time it is shown).

    Parameters
    ----------
    dock : Sam2Widget
        Gives the labels, the image's geometry and the tracked axis choice, and exports.
    """

    def __init__(self, dock):
        from magicgui import magicgui
        from magicgui.widgets import Label
        from qtpy.QtWidgets import QDialog, QPushButton, QVBoxLayout

        self.dock = dock

        @magicgui(
            call_button="Export",
            format={"label": "format", "choices": [(f.value, f) for f in LabelFormat]},
            file={"label": "file", "mode": "w", "filter": "Labels (*.tif *.tiff *.zarr)"},
            tracked_axis={"label": "tracked axis", "choices": ["time", "z"],
                          "tooltip": "time: frames (ImageJ) / a time axis (OME); z: slices / a space axis"},
            statistics={"label": "statistics (.csv)",
                        "tooltip": "also write one row per object and frame (area, centroid, box, "
                                   "SAM 2's scores) to a CSV file named like the labels"},
        )
        def export(format: LabelFormat = LabelFormat.IMAGEJ_TIFF, file: Path = Path("labels.tif"),
                   tracked_axis: str = "time", statistics: bool = False):
            return self._export(with_format(file, format), tracked_axis, statistics)

        self.form = export
        self.voxel = Label(value="")  # no name: shown, not a parameter of the form
        export.insert(3, self.voxel)
        export.format.changed.connect(self._format_chosen)
        export.file.changed.connect(self._file_chosen)
        export.tracked_axis.changed.connect(lambda *_: self._show_geometry())
        self.dialog = QDialog(dock)
        self.dialog.setWindowTitle("Export SAM 2 labels")
        QVBoxLayout(self.dialog).addWidget(export.native)
        # Enter in the dialog exports (a dialog's default button is otherwise its first one,
        # here the file field's "Choose file")
        for button in self.dialog.findChildren(QPushButton):
            button.setAutoDefault(False)
        call_button = export.call_button
        assert call_button is not None  # call_button="Export" above
        call_button.native.setDefault(True)

    # ------------------------------------------------------------------ the fields follow each other
    def _format_chosen(self, fmt):
        wanted = with_format(self.form.file.value, fmt)
        if Path(self.form.file.value) != wanted:
            self.form.file.value = wanted

    def _file_chosen(self, path):
        fmt = LabelFormat.of(path)
        if fmt is not None and fmt != self.form.format.value:
            self.form.format.value = fmt

    def _show_geometry(self):
        from napari_sam2._qt.files import export_geometry, volume_order

        dock = self.dock
        lay, axis_kind = dock.stack_layout, self.form.tracked_axis.value
        geometry = export_geometry(dock.image_layer, lay, axis_kind)
        # a 4-D image is exported whole, (T, Z, Y, X)
        volume = tuple(lay.shape[a] for a in volume_order(lay, axis_kind)[:2]) if lay.ndim == 4 else None
        self.voxel.value = _voxel_text(geometry, lay.is_single_image, volume)

    # ------------------------------------------------------------------ show and export
    def show(self) -> None:
        """Open the dialog with the dock's current choices.

        The file is the last one chosen, or one named after the image next to where the image
        came from.
        """
        dock = self.dock
        dock.tracked_labels()  # no labels yet: the status line says what to do first
        current = Path(self.form.file.value)
        if current.name == "labels.tif" and not current.is_absolute():  # first time: a good name
            self.form.file.value = with_format(dock._image_folder() / f"{dock._image_stem()}_labels",
                                               self.form.format.value)
        self.form.tracked_axis.value = dock.axis_kind.currentText()
        self._show_geometry()
        self.dialog.show()
        self.dialog.raise_()

    def _export(self, path: Path, tracked_axis: str, statistics: bool = False):
        dock = self.dock
        if dock.axis_kind.currentText() != tracked_axis:
            dock.axis_kind.setCurrentText(tracked_axis)  # what the axis is holds for the whole dock
        out = dock._guard(dock.export_labels, path, statistics)
        if out is not None:
            self.dialog.accept()
        return out
