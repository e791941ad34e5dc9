"""Write label volumes that other software opens: ImageJ/Fiji TIFF, OME-Zarr, GeoTIFF.

* **TIFF** (``.tif``, ``.tiff``): an ImageJ hyperstack (``TYX``, ``ZYX`` or, for a time-lapse
  of z-stacks, ``TZYX``), deflate-compressed,
  with the pixel size in the resolution tags and the slice spacing / frame interval and unit in
  the ImageJ metadata, so Fiji shows calibrated measurements. Labels are uint16 when the largest
  id fits (ImageJ's 16-bit type); above 65535 they are uint32, which ImageJ hyperstacks cannot
  hold, so the file is an OME-TIFF instead (Fiji opens it through Bio-Formats). A GeoTIFF input's
  georeferencing tags are written on every page, so a satellite time series segments straight
  back into GIS (GDAL opens page 0, and each page as a ``GTIFF_DIR`` subdataset).
* **OME-TIFF** (``.ome.tif``, ``.ome.tiff``): the same pages with OME-XML metadata (axes, physical
  pixel size and slice spacing or time increment, with units), for Bio-Formats, OMERO, QuPath.
* **zarr** (``.zarr``, ``.ome.zarr``): an OME-NGFF 0.4 image with one full-resolution array
  chunked one frame per chunk, written frame by frame: for volumes larger than memory.

:class:`LabelsWriter` takes frames in any order as they are computed (propagation runs forward
and then backward from the prompt). It writes under a unique temporary name beside the output
(:mod:`napari_sam2.io.atomic`): :meth:`LabelsWriter.close` renames the complete file into place,
:meth:`LabelsWriter.close_partial` keeps what finished as ``NAME.partial.tif`` / ``.zarr`` (a valid
file in which frames never written are 0). An existing output is never emptied or replaced by an
incomplete one, and an existing folder is replaced only if napari-sam2 wrote it.

Nothing here imports torch, Qt or napari.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.arrays import OneFrameStack
from napari_sam2.errors import LabelWriteError, OutputPathError
from napari_sam2.io.atomic import StagedOutput, check_output_path, mark_as_ours
from napari_sam2.io.readers import FrameGeometry

__all__ = [
    "LabelsWriter",
    "label_dtype",
    "labels_format",
    "write_labels",
    "LABEL_SUFFIXES",
]

LABEL_SUFFIXES = (".tif", ".tiff", ".zarr")
#: Frames buffered in memory before the TIFF writer switches to a temporary file next to the output.
_MEMORY_BUFFER_BYTES = 512 * 2**20
#: Largest chunk side of the zarr output (frames are chunked (1, <=1024, <=1024)).
_ZARR_CHUNK = 1024

# OME-NGFF wants UDUNITS-2 names
_NGFF_UNITS = {
    "µm": "micrometer", "μm": "micrometer", "um": "micrometer", "micron": "micrometer",
    "micrometer": "micrometer", "nm": "nanometer", "mm": "millimeter", "cm": "centimeter",
    "m": "meter", "km": "kilometer", "inch": "inch", "ft": "foot",
    "s": "second", "sec": "second", "ms": "millisecond", "min": "minute", "h": "hour",
}


def labels_format(path) -> str:
    """``"tiff"`` or ``"zarr"`` from the output name.

    Raises
    ------
    LabelWriteError
        For any other suffix.
    """
    name = str(path).rstrip("/\\").lower()
    if name.endswith((".tif", ".tiff")):
        return "tiff"
    if name.endswith(".zarr"):
        return "zarr"
    raise LabelWriteError(
        f"unknown output format for '{path}': write labels to a .tif/.tiff (ImageJ/Fiji, GIS) "
        "or a .zarr (OME-Zarr, for volumes larger than memory) path"
    )


def label_dtype(max_id: int) -> np.dtype:
    """uint16 when the largest id fits (ImageJ's 16-bit type), else uint32.

    Raises
    ------
    LabelWriteError
        If ``max_id`` is negative or above 2**32 - 1.
    """
    max_id = int(max_id)
    if max_id < 0:
        raise LabelWriteError(f"label ids must be >= 0, got {max_id}")
    if max_id <= np.iinfo(np.uint16).max:
        return np.dtype(np.uint16)
    if max_id <= np.iinfo(np.uint32).max:
        return np.dtype(np.uint32)
    raise LabelWriteError(f"label id {max_id} does not fit in 32 bits")


def _imagej_unit(unit):
    if unit is None:
        return None
    # ImageJ descriptions are ASCII: ImageJ itself writes the micro sign escaped
    return str(unit).replace("µ", "\\u00B5").replace("μ", "\\u00B5").encode("ascii", "replace").decode()


def _ome_unit(unit):
    return {"um": "µm", "micron": "µm", "μm": "µm"}.get(unit, unit)


class LabelsWriter:
    """Collect ``(T, Y, X)`` label frames as they are computed and write a TIFF or zarr file.

    Parameters
    ----------
    path : str or pathlib.Path
        ``.tif``/``.tiff`` or ``.zarr``.
    shape : (int, int, int) or (int, int, int, int)
        ``(T, Y, X)`` of the whole output; or ``(T, Z, Y, X)`` for a time-lapse of z-stacks,
        whose "frames" are then whole ``(Z, Y, X)`` stacks (``geometry.z_step`` is their z step).
    max_id : int
        The largest label id that will be written (chooses uint16 or uint32).
    geometry : FrameGeometry, optional
        Physical scale, units, axis name and GeoTIFF tags (see :func:`~napari_sam2.io.readers.video_frames`).
    buffer_dir : str or pathlib.Path, optional
        Where a TIFF output larger than 512 MiB is buffered until :meth:`close` (default: next
        to the output, on the same disk).

    Notes
    -----
    zarr output is written frame by frame as :meth:`write_frame` is called, into a temporary
    folder beside the output. A TIFF is written in :meth:`close`, because frames arrive out of
    order and a TIFF's pages are sequential; until then frames live in memory or in a
    memory-mapped temporary file. :meth:`close` renames the complete output into place;
    :meth:`close_partial` (after an error or an interruption) keeps what finished as
    ``NAME.partial.tif`` / ``NAME.partial.zarr`` and leaves an earlier output untouched. As a
    context manager, a block that raises keeps the partial output.
    """

    def __init__(self, path, shape, max_id: int, geometry: FrameGeometry | None = None, *,
                 buffer_dir=None):
        self.path = Path(str(path).rstrip("/\\"))
        self.format = labels_format(self.path)
        self.shape = tuple(int(s) for s in shape)
        if len(self.shape) not in (3, 4):
            raise LabelWriteError(f"labels are written as (T, Y, X) or (T, Z, Y, X) stacks, "
                                  f"got shape {self.shape}")
        self.dtype = label_dtype(max_id)
        self.geometry = geometry or FrameGeometry()
        #: an OME-TIFF is asked for by name (ImageJ TIFF otherwise, while ids fit 16 bits)
        self.ome = self.path.name.lower().endswith((".ome.tif", ".ome.tiff"))
        self.written = np.zeros(self.shape[0], bool)
        try:
            check_output_path(self.path, folder=self.format == "zarr")
        except OutputPathError as err:
            raise LabelWriteError(str(err)) from None
        self._closed = False
        self._buffer_file = None
        self._staged = StagedOutput(self.path, folder=self.format == "zarr")
        #: where the output went: the path, the partial output, or None
        self.result: Path | None = None
        if self.format == "zarr":
            try:
                self._array = _create_ome_zarr(self._staged.temp, self.shape, self.dtype, self.geometry,
                                               name=self.path.name)
            except BaseException:
                self._staged.discard()
                raise
        else:
            nbytes = int(np.prod(self.shape)) * self.dtype.itemsize
            if nbytes <= _MEMORY_BUFFER_BYTES:
                self._array = np.zeros(self.shape, self.dtype)
            else:
                folder = Path(buffer_dir) if buffer_dir is not None else self.path.parent
                fd, name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".buffer", dir=folder)
                os.close(fd)
                self._buffer_file = Path(name)
                self._array = np.memmap(self._buffer_file, self.dtype, mode="w+", shape=self.shape)

    @property
    def temp_path(self) -> Path:
        """Where the output is written until :meth:`close` (a hidden name beside it)."""
        return self._staged.temp

    @property
    def n_written(self) -> int:
        """Frames written so far."""
        return int(self.written.sum())

    def write_frame(self, t: int, labels) -> None:
        """Store frame ``t`` (a ``(Y, X)`` integer array, ``(Z, Y, X)`` in a 4-D output).

        Values must fit the output dtype.
        """
        if self._closed:
            raise LabelWriteError("the labels file is already closed")
        labels = np.asarray(labels)
        if labels.shape != self.shape[1:]:
            raise LabelWriteError(
                f"frame {t} has shape {labels.shape}, the output's frames are {self.shape[1:]}"
            )
        self._array[int(t)] = labels.astype(self.dtype, copy=False)
        self.written[int(t)] = True

    def read_frame(self, t: int) -> np.ndarray:
        """Frame ``t`` as written so far (zeros if it was not written yet)."""
        if not self.written[int(t)]:
            return np.zeros(self.shape[1:], self.dtype)
        return np.array(self._array[int(t)], dtype=self.dtype)

    def close(self) -> Path | None:
        """Finish the output and rename it into place (replacing an earlier one); returns its path.

        If writing fails (disk full...), the temporary files are removed, an earlier output is
        untouched and the error is raised. Closing again returns what the first close left:
        the path, the partial output, or None after :meth:`discard`.
        """
        if self._closed:
            return self.result
        self._finish(complete=True)
        return self.result

    def close_partial(self) -> Path | None:
        """Keep what was written as ``NAME.partial.tif`` / ``.zarr``; the output is untouched.

        Returns
        -------
        pathlib.Path or None
            The partial output, or None if nothing could be written (e.g. the disk is full).
        """
        if self._closed:
            return self.result
        try:
            self._finish(complete=False)
        except (OSError, ValueError):
            self._staged.discard()
            self.result = None
        return self.result

    def discard(self) -> None:
        """Remove everything written; the output is untouched."""
        self._closed = True
        self._release()
        self._staged.discard()

    def _finish(self, complete: bool) -> None:
        self._closed = True
        try:
            if self.format == "tiff":
                _write_tiff(self._staged.temp, self._array, self.geometry, ome=self.ome)
            self.result = self._staged.commit() if complete else self._staged.keep_partial()
        except BaseException:
            self._staged.discard()
            raise
        finally:
            self._release()

    def _release(self) -> None:
        if self._buffer_file is not None:
            self._array = None
            self._buffer_file.unlink(missing_ok=True)
            self._buffer_file = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.close_partial()
        return False


# --------------------------------------------------------------------------- TIFF
def _write_tiff(path: Path, frames, geometry: FrameGeometry, ome: bool = False) -> None:
    """Write ``(T, Y, X)`` or ``(T, Z, Y, X)`` frames (array-like, read one frame at a time) as a TIFF.

    An ImageJ TIFF, or an OME-TIFF when ``ome`` or when the ids need 32 bits.
    """
    import tifffile

    shape = tuple(int(s) for s in frames.shape)
    dtype = np.dtype(frames.dtype)
    t_scale, dy, dx = (float(s) for s in geometry.scale)
    t_unit, unit = geometry.units
    dy, dx = abs(dy), abs(dx)
    volumes = len(shape) == 4  # a time-lapse of z-stacks: ImageJ's TZYX order
    z_step = float(geometry.z_step) if volumes and geometry.z_step else None
    axis = "T" if volumes or geometry.axis_name != "Z" else "Z"
    # tifffile.imwrite's keywords, of many types
    kwargs: dict[str, Any] = dict(compression="zlib", photometric="minisblack",
                                  extratags=list(geometry.geotiff_tags) or None)
    if unit is not None and dx > 0 and dy > 0:
        kwargs["resolution"] = (1.0 / dx, 1.0 / dy)
    meta: dict[str, Any] = {"axes": "TZYX" if volumes else f"{axis}YX"}  # ImageJ or OME metadata
    if dtype == np.uint16 and not ome:
        if unit is not None:
            meta["unit"] = _imagej_unit(unit)
        if axis == "Z" and (t_scale != 1.0 or unit is not None):
            meta["spacing"] = t_scale
        if z_step is not None:
            meta["spacing"] = z_step
        if axis == "T" and t_scale != 1.0:
            meta["finterval"] = t_scale
            if t_unit:
                meta["tunit"] = str(t_unit)
        kwargs.update(imagej=True, metadata=meta)
    else:
        if unit is not None:
            meta.update(PhysicalSizeX=dx, PhysicalSizeY=dy, PhysicalSizeXUnit=_ome_unit(unit),
                        PhysicalSizeYUnit=_ome_unit(unit))
            if axis == "Z" or z_step is not None:
                meta.update(PhysicalSizeZ=z_step if z_step is not None else t_scale,
                            PhysicalSizeZUnit=_ome_unit(unit))
        if axis == "T" and t_scale != 1.0:
            meta["TimeIncrement"] = t_scale
            if t_unit:
                meta["TimeIncrementUnit"] = _ome_unit(t_unit)
        kwargs.update(ome=True, metadata=meta)

    def pages():  # one (Y, X) page at a time: t, then z in a 4-D volume
        for t in range(shape[0]):
            frame = np.asarray(frames[t])
            for page in (frame if volumes else [frame]):
                yield np.ascontiguousarray(page, dtype=dtype)

    # the caller gives a temporary name (see LabelsWriter): a failure leaves no file in place
    try:
        tifffile.imwrite(path, pages(), shape=shape, dtype=dtype, **kwargs)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- zarr
def _create_ome_zarr(path: Path, shape, dtype, geometry: FrameGeometry, name: str | None = None):
    """Create an OME-NGFF 0.4 image group with one ``(T, Y, X)`` (or ``(T, Z, Y, X)``) array; return it."""
    import zarr

    volumes = len(shape) == 4
    chunks = (*([1] * (len(shape) - 2)), min(shape[-2], _ZARR_CHUNK), min(shape[-1], _ZARR_CHUNK))
    if int(zarr.__version__.split(".")[0]) >= 3:
        group = zarr.open_group(str(path), mode="w", zarr_format=2)
        array = group.create_array("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
    else:  # pragma: no cover - zarr 2
        group = zarr.open_group(str(path), mode="w")
        array = group.create_dataset("0", shape=shape, chunks=chunks, dtype=dtype, fill_value=0)
    t_scale, dy, dx = (abs(float(s)) for s in geometry.scale)
    t_unit, unit = geometry.units
    axis_name = "T" if volumes else geometry.axis_name
    first = {"name": axis_name.lower(), "type": "space" if axis_name == "Z" else "time"}
    first_unit = _NGFF_UNITS.get(unit if axis_name == "Z" else t_unit)
    if first_unit:
        first["unit"] = first_unit
    axes = [first]
    steps = [t_scale or 1.0]
    if volumes:
        steps.append(abs(float(geometry.z_step or 1.0)))
    for axis_name in ("z", "y", "x") if volumes else ("y", "x"):  # z: in the pixels' unit
        ax = {"name": axis_name, "type": "space"}
        if _NGFF_UNITS.get(unit):
            ax["unit"] = _NGFF_UNITS[unit]
        axes.append(ax)
    group.attrs["multiscales"] = [{
        "version": "0.4",
        "name": name or path.name,
        "axes": axes,
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [*steps, dy or 1.0, dx or 1.0]}]}],
    }]
    # tells OME-Zarr viewers (napari-ome-zarr, MoBIE) that the values are labels, not intensities
    group.attrs["image-label"] = {"version": "0.4"}
    # lets a later run recognise the folder as ours, the only kind of folder it may replace
    mark_as_ours(group.attrs, "labels")
    return array


# --------------------------------------------------------------------------- whole arrays
def write_labels(path, data, geometry: FrameGeometry | None = None) -> Path:
    """Write a whole label array (numpy, dask, zarr...) to TIFF or OME-Zarr, frame by frame.

    Parameters
    ----------
    path : str or pathlib.Path
        ``.tif``/``.tiff`` or ``.zarr``.
    data : array-like, (Y, X), (T, Y, X) or (T, Z, Y, X)
        Non-negative integer labels. Only one frame (one z-stack of a 4-D volume) is in
        memory at a time.
    geometry : FrameGeometry, optional
        Scale, units and GeoTIFF tags.

    Returns
    -------
    pathlib.Path
    """
    ndim = len(data.shape)
    if ndim == 2:
        frames = OneFrameStack(data)
    elif ndim in (3, 4):
        frames = data
    else:
        raise LabelWriteError(
            f"napari-sam2 writes 2-D, 3-D or 4-D (T, Z, Y, X) labels, got {ndim}-D data of shape "
            f"{tuple(data.shape)}"
        )
    dtype = np.dtype(data.dtype)
    if dtype.kind == "b":
        max_id = 1
    elif dtype.kind == "u" and dtype.itemsize <= 2:
        max_id = int(np.iinfo(dtype).max)  # fits uint16 whatever the values: no need to look
    elif dtype.kind in "ui":
        max_id = 0
        for t in range(frames.shape[0]):  # one pass to check the ids and choose uint16 or uint32
            frame = np.asarray(frames[t])
            if frame.size:
                if frame.min() < 0:
                    raise LabelWriteError(f"labels must be >= 0; frame {t} holds {frame.min()}")
                max_id = max(max_id, int(frame.max()))
    else:
        raise LabelWriteError(f"labels must be integers, got {dtype}")
    with LabelsWriter(path, frames.shape, max_id, geometry) as writer:
        for t in range(frames.shape[0]):
            writer.write_frame(t, np.asarray(frames[t]))
    return Path(path)
