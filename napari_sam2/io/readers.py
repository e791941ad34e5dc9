"""Read the stacks scientists have, lazily, with their voxel size.

:func:`open_stack` opens a file or folder and returns an :class:`ImageStack`: an array-like that
reads (or decodes) only the frames asked for, the name of each axis, the physical pixel size and
unit, and the georeferencing tags of a GeoTIFF. :func:`video_frames` then picks the video axis
and gives the ``(T, Y, X[, C])`` view the engine tracks through.

Formats
-------
* TIFF (plain, ImageJ hyperstacks, OME-TIFF, GeoTIFF): pages are read on demand through
  tifffile's zarr store; voxel size from the resolution tags and ImageJ ``spacing``, or from the
  OME ``PhysicalSize*`` attributes, or from ``ModelPixelScaleTag`` for a GeoTIFF.
* A folder of images (PNG, JPEG, TIFF, BMP), in natural order (``img2`` before ``img10``).
* Video (mp4, avi, mov, mkv, webm, m4v through PyAV; gif through Pillow): decoded on demand with
  keyframe seeking and a small frame cache, never all at once.
* zarr arrays and OME-Zarr images (the full-resolution level, with its scale).
* ``.npy`` through a read-only memory map.

TIFF files are read by :mod:`napari_sam2.io.tiff`, videos, GIFs and folders of images by the
frame readers of :mod:`napari_sam2.io.lazy_frames`; :class:`ImageStack` is in
:mod:`napari_sam2.io.image_stack`. Their public names are importable from here too.

Nothing here imports torch, Qt or napari.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from napari_sam2.arrays import OneFrameStack
from napari_sam2.errors import ImageReadError
from napari_sam2.io.image_stack import ImageStack
from napari_sam2.io.lazy_frames import (
    IMAGE_SUFFIXES,
    TIFF_SUFFIXES,
    VIDEO_SUFFIXES,
    GifFrames,
    ImageFolderFrames,
    LazyFrames,
    VideoFrames,
    natural_key,
)
from napari_sam2.io.tiff import GEOTIFF_TAGS, read_tiff

__all__ = [
    "ImageStack",
    "LazyFrames",
    "VideoFrames",
    "GifFrames",
    "ImageFolderFrames",
    "open_stack",
    "video_frames",
    "FrameGeometry",
    "VIDEO_SUFFIXES",
    "TIFF_SUFFIXES",
    "IMAGE_SUFFIXES",
    "GEOTIFF_TAGS",
]


# --------------------------------------------------------------------------- format readers
def _guess_axes(shape) -> str:
    """Axis names for data stored without them (npy, plain zarr)."""
    nd = len(shape)
    if nd == 2:
        return "YX"
    if nd == 3:
        return "YXC" if shape[-1] in (3, 4) else "TYX"
    if nd == 4:
        if shape[-1] <= 4:
            return "TYXC"
        return "TCYX" if shape[1] <= 4 else "TZYX"
    if nd == 5:
        return "TZCYX"
    raise ImageReadError(f"cannot interpret {nd}-D data of shape {tuple(shape)} as an image stack")


def _read_zarr(path: Path) -> ImageStack:
    import zarr

    try:
        node = zarr.open(str(path), mode="r")
    except Exception as err:  # zarr raises several unrelated types for a non-zarr folder
        raise ImageReadError(f"cannot open '{path}' as zarr: {err}") from None
    axes, scale, units = None, None, None
    data: zarr.Array
    if isinstance(node, zarr.Array):
        data = node
    else:
        attrs: dict[str, Any] = dict(node.attrs)
        ms = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
        if ms:
            datasets = ms[0].get("datasets") if isinstance(ms, list) and isinstance(ms[0], dict) else None
            level = datasets[0] if isinstance(datasets, list) and datasets else None
            if not isinstance(level, dict) or not isinstance(level.get("path"), str):
                arrays = sorted(name for name, _ in node.arrays())
                raise ImageReadError(
                    f"'{path}' is an OME-Zarr image whose multiscales metadata lists no dataset: give "
                    f"the array's path instead, e.g. {path / (arrays[0] if arrays else '0')}"
                )
            try:
                found = node[level["path"]]
            except KeyError:
                raise ImageReadError(
                    f"'{path}': the OME-Zarr metadata names the dataset '{level['path']}', which does "
                    "not exist in the folder (an incomplete copy?)"
                ) from None
            if not isinstance(found, zarr.Array):
                raise ImageReadError(
                    f"'{path}': the OME-Zarr metadata names the dataset '{level['path']}', which is a "
                    "group, not an array: give the array's path instead"
                )
            data = found
            names = [a["name"] if isinstance(a, dict) else a for a in ms[0].get("axes", [])]
            if len(names) == data.ndim:
                axes = "".join({"c": "C"}.get(n.lower(), n.upper() if n.upper() in "TZYX" else "Q")
                               for n in names)
                units = tuple(a.get("unit") if isinstance(a, dict) else None
                              for a in ms[0].get("axes", []))
            for tr in level.get("coordinateTransformations", []):
                if tr.get("type") == "scale" and len(tr.get("scale", [])) == data.ndim:
                    scale = tuple(float(s) for s in tr["scale"])
        else:
            members = dict(node.arrays())
            arrays = sorted(members)
            if len(arrays) != 1:
                listing = ", ".join(arrays) or "none"
                raise ImageReadError(
                    f"'{path}' is a zarr group with arrays [{listing}]: give the array's path, "
                    f"e.g. {path / (arrays[0] if arrays else 'ARRAY')}"
                )
            data = members[arrays[0]]
    axes = axes or _guess_axes(data.shape)
    scale = scale or (1.0,) * data.ndim
    units = units or (None,) * data.ndim
    return ImageStack(data, axes, scale, units, path)


def _read_folder(path: Path) -> ImageStack:
    files = sorted(
        (p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
         and not p.name.startswith(".")),
        key=natural_key,
    )
    if not files:
        raise ImageReadError(
            f"the folder '{path}' holds no image file ({', '.join(IMAGE_SUFFIXES)}): give a folder "
            "of 2-D images, one per frame"
        )
    frames = ImageFolderFrames(files)
    axes = "TYX" if frames.ndim == 3 else "TYXC"
    meta = {"files": [f.name for f in files]}
    if frames.notes:
        meta["notes"] = list(frames.notes)
    return ImageStack(frames, axes, (1.0,) * frames.ndim, (None,) * frames.ndim, path, metadata=meta)


def _is_zarr(path: Path) -> bool:
    return path.suffix.lower() == ".zarr" or (
        path.is_dir() and any((path / n).exists() for n in (".zarray", ".zgroup", "zarr.json"))
    )


def open_stack(path) -> ImageStack:
    """Open an image stack lazily.

    Parameters
    ----------
    path : str or pathlib.Path
        A TIFF file, a folder of images, a video (mp4, avi, mov, mkv, webm, m4v, gif), a zarr
        array or group (OME-Zarr), a ``.npy`` file, or a single PNG/JPEG/BMP image.

    Returns
    -------
    ImageStack

    Raises
    ------
    ImageReadError
        If the path does not exist or the format is unknown or unreadable.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"input '{path}' does not exist")
    suffix = path.suffix.lower()
    if _is_zarr(path):
        return _read_zarr(path)
    if path.is_dir():
        return _read_folder(path)
    if suffix in TIFF_SUFFIXES:
        return read_tiff(path)
    if suffix == ".gif":
        gif = GifFrames(path)
        return ImageStack(gif, "TYXC", (1.0,) * 4, (None,) * 4, path, metadata={"fps": gif.fps})
    if suffix in VIDEO_SUFFIXES:
        video = VideoFrames(path)
        return ImageStack(video, "TYXC", (1.0,) * 4, (None,) * 4, path, metadata={"fps": video.fps})
    if suffix == ".npy":
        try:
            data = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise ImageReadError(f"cannot read '{path}' as a numpy array: {err}") from None
        if data.dtype.kind not in "uifb":
            raise ImageReadError(f"'{path}' holds {data.dtype} values, not numbers")
        return ImageStack(data, _guess_axes(data.shape), (1.0,) * data.ndim, (None,) * data.ndim, path)
    if suffix in IMAGE_SUFFIXES:
        data = ImageFolderFrames([path])[0]
        return ImageStack(data, _guess_axes(data.shape), (1.0,) * data.ndim, (None,) * data.ndim, path)
    known = "TIFF (.tif, .tiff), a folder of images, video (" + ", ".join(VIDEO_SUFFIXES) + \
        "), zarr (.zarr), .npy, or one .png/.jpg image"
    raise ImageReadError(
        f"unknown input format '{suffix or path.name}' for '{path}': napari-sam2 reads {known}"
    )


# --------------------------------------------------------------------------- video view
@dataclass
class FrameGeometry:
    """How the frames of a ``(T, Y, X)`` view sit in physical space (for writers and stats).

    Attributes
    ----------
    axis_name : str
        ``"T"`` or ``"Z"``: what the video axis is (ImageJ writes frames or slices).
    scale : (float, float, float)
        Step along the video axis, rows and columns (row step negative on north-up GeoTIFFs).
    units : (str or None, str or None)
        Unit of the video-axis step and of the pixel size.
    origin : (float, float)
        Physical coordinate of pixel (0, 0)'s centre, ``(y, x)``.
    geotiff_tags : list
        GeoTIFF tags to copy to the output (tifffile ``extratags``).
    z_step : float or None
        Only for a 4-D ``(T, Z, Y, X)`` volume (a time-lapse of z-stacks; ``axis_name`` is then
        ``"T"``): the step between z slices, in the unit of the pixel size.
    """

    axis_name: str = "T"
    scale: tuple = (1.0, 1.0, 1.0)
    units: tuple = (None, None)
    origin: tuple = (0.0, 0.0)
    geotiff_tags: list = field(default_factory=list)
    z_step: float | None = None

    @property
    def pixel_area(self) -> float:
        """The area of one pixel (y step times x step, in the unit squared)."""
        return abs(self.scale[1] * self.scale[2])


def default_video_axis(stack: ImageStack) -> int:
    """The axis tracked through by default: time, else depth, else the first other axis."""
    for letter in ("T", "Z", "Q"):
        if letter in stack.axes:
            return stack.axes.index(letter)
    return -1  # a single image


def video_frames(stack: ImageStack, axis: int | None = None):
    """Arrange a stack as ``(T, Y, X[, C])`` frames along one axis, without reading it.

    Parameters
    ----------
    stack : ImageStack
        From :func:`open_stack`.
    axis : int, optional
        The stored axis to track through (default: time, else z, else the first non-image axis).
        Every other non-image axis must have length 1.

    Returns
    -------
    frames : array-like, (T, Y, X) or (T, Y, X, C)
        A lazy view: ``frames[t]`` reads one frame.
    geometry : FrameGeometry

    Raises
    ------
    ImageReadError
        If the axis does not exist or is an image/channel axis, or other axes are longer than 1.
    """
    from napari_sam2.engine.frames import StackView

    axes, shape = stack.axes, stack.shape
    nd = len(axes)
    if "Y" not in axes or "X" not in axes:
        raise ImageReadError(f"'{stack.path.name}' has axes {axes}: it needs rows (Y) and columns (X)")
    y, x = axes.index("Y"), axes.index("X")
    c = axes.index("C") if "C" in axes else None
    if axis is None:
        v = default_video_axis(stack)
    else:
        if not -nd <= axis < nd:
            raise ImageReadError(
                f"--axis {axis} does not exist: '{stack.path.name}' has {nd} axes {axes} "
                f"(shape {shape}), numbered 0..{nd - 1}"
            )
        v = axis % nd
        if v in (y, x):
            raise ImageReadError(
                f"axis {axis} of '{stack.path.name}' is the {axes[v]} axis (axes {axes}, shape "
                f"{shape}): choose a time or depth axis to track through"
            )
        if v == c:  # asked for explicitly: a file that calls its frames channels (ImageJ's default)
            c = None
    fixed = {}
    for a in range(nd):
        if a in (y, x, c, v if v >= 0 else None):
            continue
        if shape[a] != 1:
            raise ImageReadError(
                f"'{stack.path.name}' has axes {axes} (shape {shape}): only one of them can be tracked "
                f"through, but axis {a} ({axes[a]}, length {shape[a]}) is not the video axis. "
                "Choose it with --axis, or save the 3-D stack you want to segment"
            )
        fixed[a] = 0
    if c is not None and shape[c] == 1:
        fixed[c], c = 0, None
    if v < 0:
        # a single image: a one-frame stack
        frames = StackView(OneFrameStack(stack.data), 0, (y + 1, x + 1),
                           None if c is None else c + 1, {a + 1: i for a, i in fixed.items()})
        axis_scale, axis_unit, name = 1.0, None, "T"
    else:
        frames = StackView(stack.data, v, (y, x), c, fixed)
        axis_scale, axis_unit, name = stack.scale[v], stack.units[v], ("Z" if axes[v] == "Z" else "T")
    geometry = FrameGeometry(
        axis_name=name,
        scale=(float(axis_scale), float(stack.scale[y]), float(stack.scale[x])),
        units=(axis_unit, stack.units[x] or stack.units[y]),
        origin=tuple(stack.origin),
        geotiff_tags=list(stack.geotiff_tags),
    )
    return frames, geometry
