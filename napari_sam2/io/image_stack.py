"""An image stack as stored: its pixels (read lazily), axis names, voxel size and origin.

What :func:`napari_sam2.io.readers.open_stack` returns, whatever the format. Nothing here
imports torch, Qt or napari.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_sam2.arrays import LazyArray

__all__ = ["ImageStack"]


@dataclass
class ImageStack:
    """An image stack as stored, read lazily.

    Attributes
    ----------
    data : array-like
        The pixels in their stored axis order (numpy memmap, zarr array or a lazy reader):
        indexing reads only what is asked for.
    axes : str
        One letter per axis of ``data``: ``T`` time, ``Z`` depth, ``C`` channel (``S``
        samples are reported as ``C``), ``Y``, ``X``, or ``Q`` for an axis of unknown meaning.
    scale : tuple of float
        Physical size of a step along each axis (1.0 where unknown).
    units : tuple of str or None
        Unit of each axis' scale (None where unknown).
    path : pathlib.Path
        Where it came from.
    geotiff_tags : list of tuple
        GeoTIFF tags as tifffile ``extratags`` ``(code, dtype, count, value, writeonce)``; empty
        for other inputs.
    origin : (float, float)
        Physical coordinate of the centre of pixel (0, 0), ``(y, x)``. For a GeoTIFF these are
        map coordinates, and ``scale`` along Y is negative for a north-up raster.
    metadata : dict
        Anything else worth keeping (ImageJ or OME metadata, the video frame rate).
    """

    data: LazyArray
    axes: str
    scale: tuple
    units: tuple
    path: Path
    geotiff_tags: list = field(default_factory=list)
    origin: tuple = (0.0, 0.0)
    metadata: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple:
        """The shape of ``data``, as Python ints."""
        return tuple(int(s) for s in self.data.shape)

    @property
    def dtype(self) -> np.dtype:
        """The dtype of ``data``."""
        return np.dtype(self.data.dtype)

    @property
    def name(self) -> str:
        """The file or folder name without its format suffix (``.ome.tif``, ``.tif``...)."""
        name = self.path.name
        for suffix in (".ome.zarr", ".ome.tiff", ".ome.tif"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return self.path.stem if self.path.suffix else name

    def close(self) -> None:
        """Release open files (readers reopen them if indexed again)."""
        close = getattr(self.data, "close", None)
        if callable(close):
            close()
        for obj in self.metadata.pop("_open_files", []):
            obj.close()
