"""napari reader and writer contributions (declared in ``napari.yaml``).

* :func:`get_video_reader` -- videos (mp4, avi, mov, mkv, webm, m4v, gif) as a lazy
  ``(T, Y, X, 3)`` RGB image: napari's built-in reader decodes every frame into memory first.
* :func:`write_labels_layer` -- a labels layer to an ImageJ TIFF, an OME-TIFF (``.ome.tif``) or
  an OME-Zarr image, with the layer's scale as voxel size, its axis labels saying whether the
  first axis is z or time, and, when the layer's metadata carries them (see
  :func:`stack_layer_data`), a GeoTIFF's georeferencing tags.

Nothing here imports Qt or napari; dask is imported when a file is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.io.readers import VIDEO_SUFFIXES, FrameGeometry, ImageStack, LazyFrames

__all__ = ["get_video_reader", "read_video", "write_labels_layer", "stack_layer_data", "volume_axes",
           "METADATA_KEY"]

#: Key of the layer metadata dict where the reader keeps file information for the writers.
METADATA_KEY = "napari_sam2"


def _lazy(data):
    """A dask array reading one frame per chunk from a lazy reader; other arrays unchanged."""
    if isinstance(data, LazyFrames):
        import dask.array as da

        # the reader serialises decoding itself, so dask needs no extra lock
        return da.from_array(data, chunks=(1, *data.shape[1:]), asarray=False, fancy=False,
                             lock=False, name=f"napari-sam2-{id(data):x}")
    return data


def _pint_unit(unit):
    """The unit if napari (pint) understands it, else None."""
    if not unit:
        return None
    try:
        import pint

        pint.get_application_registry().Unit(str(unit))
    except Exception:  # pint raises its own error types for unknown names
        return None
    return str(unit)


def stack_layer_data(stack: ImageStack) -> list[tuple]:
    """napari layer data tuples for an :class:`~napari_sam2.io.readers.ImageStack`.

    RGB(A) data (3 or 4 trailing channels) becomes one RGB layer; other channel axes are split
    into one layer per channel. The metadata keeps the source path, the stored axes, the
    physical origin and the GeoTIFF tags under ``metadata["napari_sam2"]``, where
    :func:`write_labels_layer` finds them when a labels layer carries the same metadata.
    """
    axes = stack.axes
    data = _lazy(stack.data)
    scale = [abs(s) or 1.0 for s in stack.scale]
    units = list(stack.units)
    meta: dict[str, Any] = {  # napari's add_image keywords
        "name": stack.name,
        "metadata": {METADATA_KEY: {
            "source_path": str(stack.path),
            "axes": axes,
            "origin": tuple(stack.origin),
            "units": tuple(stack.units),
            "geotiff_tags": list(stack.geotiff_tags),
            **{k: v for k, v in stack.metadata.items() if not k.startswith("_")},
        }},
    }
    kept = list(range(len(axes)))
    if "C" in axes:
        c = axes.index("C")
        if c == len(axes) - 1 and stack.shape[c] in (3, 4):
            meta["rgb"] = True
        else:
            meta["channel_axis"] = c
        kept.remove(c)
    meta["scale"] = [scale[a] for a in kept]
    meta["axis_labels"] = [axes[a].lower() for a in kept]
    pint_units = [_pint_unit(units[a]) for a in kept]
    if all(u is not None for u in pint_units):
        meta["units"] = pint_units
    return [(data, meta, "image")]


# --------------------------------------------------------------------------- reader
def get_video_reader(path):
    """npe2 reader: a reader function for video files, None for anything else."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if paths and all(str(p).lower().endswith(VIDEO_SUFFIXES) for p in paths):
        return read_video
    return None


def read_video(path) -> list[tuple]:
    """Read one or several videos as lazy ``(T, Y, X, 3)`` RGB image layers."""
    from napari_sam2.io.readers import open_stack

    paths = [path] if isinstance(path, (str, Path)) else list(path)
    layers = []
    for p in paths:
        layers.extend(stack_layer_data(open_stack(p)))
    return layers


# --------------------------------------------------------------------------- writer
_UNIT_NAMES = {"micrometer": "µm", "nanometer": "nm", "millimeter": "mm", "centimeter": "cm",
               "meter": "m", "kilometer": "km", "second": "s", "millisecond": "ms",
               "minute": "min", "hour": "h", "pixel": None, "dimensionless": None}


def _unit_name(unit):
    if unit is None:
        return None
    text = str(unit)
    return _UNIT_NAMES.get(text, text)


def volume_axes(meta: dict) -> tuple[int, int]:
    """``(time axis, z axis)`` among the first two axes of a 4-D layer, from its axis labels.

    Written files order a time-lapse of z-stacks as ``(T, Z, Y, X)`` (ImageJ's order): a layer
    labelled ``("z", "t", ...)`` is written with its first two axes swapped. Without such
    labels the first axis is taken as time.
    """
    labels = [str(a).lower() for a in (meta.get("axis_labels") or [])][:2]
    return (1, 0) if labels[:1] == ["z"] or labels[1:] == ["t"] else (0, 1)


def geometry_from_layer_meta(meta: dict, ndim: int) -> FrameGeometry:
    """Voxel size, units, axis name and GeoTIFF tags of a labels layer's ``meta`` dict.

    A 4-D layer is a time-lapse of z-stacks (see :func:`volume_axes`): the geometry is that
    of its ``(T, Y, X)`` frames, with the z step in ``z_step``.
    """
    scale = [float(s) for s in (meta.get("scale") or [1.0] * ndim)]
    units = list(meta.get("units") or [None] * ndim)
    labels = [str(a).lower() for a in (meta.get("axis_labels") or [])]
    z_step = None
    if ndim == 4 and len(scale) == 4 and len(units) == 4:
        t, z = volume_axes(meta)
        z_step = abs(scale[z])
        scale, units, labels = [scale[t], *scale[2:]], [units[t], *units[2:]], ["t", "y", "x"]
    scale = scale[-3:]
    scale = [1.0] * (3 - len(scale)) + scale
    units = units[-3:]
    units = [None] * (3 - len(units)) + [_unit_name(u) for u in units]
    labels = labels[-3:]
    info = (meta.get("metadata") or {}).get(METADATA_KEY, {})
    geotags = list(info.get("geotiff_tags") or [])
    origin = tuple(info.get("origin") or (0.0, 0.0))
    if geotags and ndim >= 2:
        # a north-up GeoTIFF steps south along the rows: keep the sign the tags imply
        scale[1] = -abs(scale[1])
    return FrameGeometry(
        axis_name="Z" if labels and labels[0] == "z" and ndim == 3 else "T",
        scale=tuple(scale),
        units=(units[0], units[2] or units[1]),
        origin=origin,
        geotiff_tags=geotags,
        z_step=z_step,
    )


def write_labels_layer(path: str, data, meta: dict) -> list[str]:
    """Npe2 writer: a 2-D, 3-D or 4-D (time-lapse of z-stacks) labels layer to a label file.

    ``.tif``/``.tiff`` (ImageJ), ``.ome.tif`` (OME-TIFF) or ``.zarr`` (OME-Zarr).
    """
    from napari_sam2.io.writers import write_labels

    ndim = len(np.shape(data)) if not hasattr(data, "ndim") else data.ndim
    geometry = geometry_from_layer_meta(meta, ndim)
    if ndim == 4 and volume_axes(meta) == (1, 0):
        data = data.transpose(1, 0, 2, 3)  # (Z, T, Y, X) -> (T, Z, Y, X), a view
    return [str(write_labels(path, data, geometry))]
