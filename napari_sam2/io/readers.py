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

Nothing here imports torch, Qt or napari.
"""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_sam2.arrays import LazyArray, OneFrameStack
from napari_sam2.errors import ImageReadError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from av import VideoFrame

__all__ = [
    "ImageStack",
    "LazyFrames",
    "VideoFrames",
    "GifFrames",
    "ImageFolderFrames",
    "open_stack",
    "video_frames",
    "VIDEO_SUFFIXES",
    "TIFF_SUFFIXES",
    "IMAGE_SUFFIXES",
]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif")
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: GeoTIFF tags copied to label output: pixel scale, tie points, transformation, GeoKeys.
#: GDAL_METADATA (42112) and GDAL_NODATA (42113) describe the input's values, not labels.
GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)

#: Decoded video frames kept for re-use (backward propagation reads a GOP in reverse).
_VIDEO_CACHE_BYTES = 256 * 2**20


# --------------------------------------------------------------------------- stack description
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


# --------------------------------------------------------------------------- lazy frames
class LazyFrames:
    """An array-like ``(N, ...)`` whose items are produced one at a time by :meth:`_read`.

    Supports what numpy, dask and napari use: ``shape``, ``dtype``, ``ndim``, ``len`` and basic
    indexing (integers, slices, integer lists and ``...``) with the first axis handled frame by
    frame. ``decoded`` counts the frames actually read, so tests can check laziness.
    """

    shape: tuple
    dtype: np.dtype

    def __init__(self):
        self.decoded = 0
        self._lock = threading.RLock()

    @property
    def ndim(self) -> int:
        """The number of axes."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of elements of the whole stack (none is read)."""
        return int(np.prod(self.shape))

    def __len__(self) -> int:
        return self.shape[0]

    def _read(self, i: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _frame(self, i) -> np.ndarray:
        n = self.shape[0]
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"frame {i} is out of range for {n} frames")
        with self._lock:
            return self._read(i % n)

    def __getitem__(self, key):
        if not isinstance(key, tuple):
            key = (key,)
        if key and key[0] is Ellipsis and len(key) > 1:
            key = (slice(None), *key)  # an ellipsis can also absorb zero axes
        if not key:
            key = (slice(None),)
        first, rest = key[0], key[1:]
        if first is Ellipsis:
            first, rest = slice(None), ()
        if isinstance(first, (int, np.integer)):
            frame = self._frame(first)
            return frame[rest] if rest else frame
        idx = np.arange(self.shape[0])[first]
        if np.ndim(idx) != 1:
            raise TypeError(f"unsupported index {first!r} for the frame axis")
        if len(idx) == 0:
            empty = np.empty(self.shape[1:], self.dtype)
            return np.empty((0,) + (empty[rest] if rest else empty).shape, self.dtype)
        return np.stack([self._frame(i)[rest] if rest else self._frame(i) for i in idx])

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype, copy=False)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} shape={self.shape} dtype={self.dtype}>"


class VideoFrames(LazyFrames):
    """Frames of a video file decoded on demand with PyAV, as ``(T, Y, X, 3)`` uint8 RGB.

    Opening demuxes the file once (reads packets, decodes nothing) to count the frames and
    find the keyframes. Reading frame ``t`` continues decoding when ``t`` follows the last
    frame decoded (forward propagation), otherwise seeks to the keyframe before ``t`` and
    decodes from there; the frames decoded on the way are cached, so reading backwards through
    a group of pictures decodes it once.
    """

    def __init__(self, path, cache_bytes: int = _VIDEO_CACHE_BYTES):
        super().__init__()
        import av

        self.path = Path(path)
        try:
            self._container = av.open(str(self.path))
        except (av.error.FFmpegError, OSError) as err:
            raise ImageReadError(f"cannot open video '{self.path}': {err}") from None
        if not self._container.streams.video:
            raise ImageReadError(f"'{self.path}' holds no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        pts, keys = [], []
        for packet in self._container.demux(self._stream):
            stamp = packet.pts if packet.pts is not None else packet.dts
            if stamp is None or packet.size == 0:
                continue
            pts.append(stamp)
            if packet.is_keyframe:
                keys.append(stamp)
        if not pts:
            raise ImageReadError(f"the video '{self.path}' holds no frame")
        self._pts = np.unique(np.asarray(pts, dtype=np.int64))
        self._index = {int(p): i for i, p in enumerate(self._pts)}
        key_idx = sorted({self._index[int(k)] for k in keys}) or [0]
        if key_idx[0] != 0:
            key_idx.insert(0, 0)
        self._keyframes = np.asarray(key_idx)
        h, w = self._stream.codec_context.height, self._stream.codec_context.width
        self.shape = (len(self._pts), int(h), int(w), 3)
        self.dtype = np.dtype(np.uint8)
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.fps = float(rate) if rate else None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_frames = max(2, cache_bytes // max(1, h * w * 3))
        self._decoder: Iterator[VideoFrame] | None = None
        self._next: int | None = None  # index the running decoder yields next
        self._seek_to(0)

    def _seek_to(self, i: int) -> None:
        key = int(self._keyframes[np.searchsorted(self._keyframes, i, side="right") - 1])
        self._container.seek(int(self._pts[key]), backward=True, any_frame=False, stream=self._stream)
        self._decoder = self._container.decode(self._stream)
        self._next = key

    def _keep(self, i: int, frame: np.ndarray) -> None:
        self._cache[i] = frame
        self._cache.move_to_end(i)
        while len(self._cache) > self._cache_frames:
            self._cache.popitem(last=False)

    def _read(self, i: int) -> np.ndarray:
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        key = int(self._keyframes[np.searchsorted(self._keyframes, i, side="right") - 1])
        if self._next is None or not key <= self._next <= i:
            self._seek_to(i)
        for _ in range(2):
            first, decoder = self._next, self._decoder
            # _seek_to (called by __init__, and just above when needed) sets both
            assert first is not None and decoder is not None
            expected = first
            for frame in decoder:
                idx = self._index.get(frame.pts, expected) if frame.pts is not None else expected
                expected = idx + 1
                if idx < first:
                    # leading pictures of an open GOP refer to the previous one: not trustworthy
                    continue
                self._next = idx + 1
                arr = frame.to_ndarray(format="rgb24")
                self.decoded += 1
                self._keep(idx, arr)
                if idx == i:
                    return arr
                if idx > i:
                    break  # the seek landed after the frame: start again from the beginning
            self._keyframes = self._keyframes[:1]  # seeking is unreliable here: decode from 0
            self._seek_to(0)
        raise ImageReadError(
            f"could not decode frame {i} of '{self.path}' (the file may be truncated)"
        )

    def close(self) -> None:
        """Close the video file."""
        with self._lock:
            self._container.close()


class GifFrames(LazyFrames):
    """Frames of an animated GIF decoded on demand with Pillow, as ``(T, Y, X, 3)`` uint8."""

    def __init__(self, path):
        super().__init__()
        from PIL import Image

        self.path = Path(path)
        try:
            self._image = Image.open(self.path)
            n = int(getattr(self._image, "n_frames", 1))
        except Exception as err:  # OSError, or IndexError/EOFError from a truncated file
            raise ImageReadError(f"cannot open GIF '{self.path}': {err or type(err).__name__} "
                                 "(the file may be truncated)") from None
        w, h = self._image.size
        self.shape = (n, h, w, 3)
        self.dtype = np.dtype(np.uint8)
        duration = self._image.info.get("duration")
        self.fps = 1000.0 / duration if duration else None

    def _read(self, i: int) -> np.ndarray:
        try:
            self._image.seek(i)
            frame = np.asarray(self._image.convert("RGB"))
        except Exception as err:  # a truncated or damaged GIF: PIL raises IndexError, OSError...
            why = str(err) or type(err).__name__
            hint = "" if "truncated" in why else " (the file may be truncated)"
            raise ImageReadError(f"cannot decode frame {i} of '{self.path}': {why}{hint}") from None
        self.decoded += 1
        return frame

    def close(self) -> None:
        """Close the GIF file."""
        with self._lock:
            self._image.close()


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


#: Pillow modes converted to RGB when read (palettes expanded; alpha is not image content)
_TO_RGB = ("P", "PA", "RGBA", "CMYK", "YCbCr", "LAB", "HSV")
#: Pillow mode -> the dtype numpy gets after the conversions of _read_image_file
_PIL_DTYPES = {"I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16, "I;16N": np.uint16,
               "I": np.int32, "F": np.float32}


def _read_image_file(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            return tifffile.imread(path, key=0)
        from PIL import Image

        with Image.open(path) as im:
            if im.mode in _TO_RGB:
                return np.asarray(im.convert("RGB"))
            if im.mode in ("LA", "1"):
                return np.asarray(im.convert("L"))
            return np.asarray(im)
    except ImageReadError:
        raise
    except Exception as err:  # any decoder error ("image file is truncated"...): name the file
        why = " ".join(str(err).split()) or type(err).__name__
        hint = "" if "truncated" in why else " (the file may be truncated or damaged)"
        raise ImageReadError(f"cannot read '{path}': {why}{hint}") from None


def _image_file_header(path: Path) -> tuple[tuple, np.dtype]:
    """Shape and dtype of an image file as :func:`_read_image_file` returns it, from its header."""
    try:
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return tuple(int(v) for v in page.shape), np.dtype(page.dtype)
        from PIL import Image

        with Image.open(path) as im:
            size = (im.size[1], im.size[0])
            mode = im.mode
    except Exception as err:  # any decoder error: name the file
        why = " ".join(str(err).split()) or type(err).__name__
        raise ImageReadError(f"cannot read '{path}': {why}") from None
    if mode in _TO_RGB or mode == "RGB":
        return (*size, 3), np.dtype(np.uint8)
    return size, np.dtype(_PIL_DTYPES.get(mode, np.uint8))


class ImageFolderFrames(LazyFrames):
    """A folder of same-sized 2-D images as a stack; each file is read when its frame is.

    Every file's header is checked when the folder is opened (no pixel is decoded): all images
    must have the same size and kind (gray or RGB). Files of different bit depths are promoted
    to the widest type (8-bit and 16-bit PNGs give a uint16 stack, values as stored), never cast
    down; ``notes`` says so.
    """

    def __init__(self, files: Iterable[Path]) -> None:
        super().__init__()
        self.files = list(files)
        self.notes: list[str] = []
        first = _read_image_file(self.files[0])
        self.decoded += 1
        self.shape = (len(self.files), *first.shape)
        self.dtype = first.dtype
        self._check_headers()

    def _check_headers(self) -> None:
        want = self.shape[1:]
        dtypes = {self.dtype: self.files[0]}
        for path in self.files[1:]:
            shape, dtype = _image_file_header(path)
            if shape[:2] != want[:2]:
                raise ImageReadError(
                    f"'{path.name}' is {shape[0]}x{shape[1]} pixels but '{self.files[0].name}' is "
                    f"{want[0]}x{want[1]}: all images of a folder stack must have the same size"
                )
            if shape != want:
                kind = "gray" if len(shape) == 2 else f"{shape[-1]}-channel"
                first_kind = "gray" if len(want) == 2 else f"{want[-1]}-channel"
                raise ImageReadError(
                    f"'{path.name}' is a {kind} image but '{self.files[0].name}' is {first_kind}: "
                    "give the folder images of one kind"
                )
            dtypes.setdefault(dtype, path)
        if len(dtypes) > 1:
            widest = np.result_type(*dtypes)
            kinds = ", ".join(f"{dt} ('{p.name}')" for dt, p in dtypes.items())
            self.dtype = np.dtype(widest)
            self.notes.append(f"the folder mixes image types {kinds}: all are read as {self.dtype}, "
                              "values as stored")

    def _read(self, i: int) -> np.ndarray:
        frame = _read_image_file(self.files[i])
        self.decoded += 1
        if frame.shape != self.shape[1:]:
            raise ImageReadError(
                f"'{self.files[i].name}' has shape {frame.shape} but the stack's frames are "
                f"{self.shape[1:]} (from '{self.files[0].name}'): give the folder images of one kind"
            )
        if not np.can_cast(frame.dtype, self.dtype, "safe"):
            raise ImageReadError(
                f"'{self.files[i].name}' holds {frame.dtype} values, which do not fit the stack's "
                f"{self.dtype} without loss"
            )
        return frame.astype(self.dtype, copy=False)


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


def _tiff_axes(axes: str) -> str:
    # tifffile letters: S samples (RGB), I/Q/E/... sequence axes of unknown meaning
    out = []
    for a in axes:
        out.append({"S": "C"}.get(a, a if a in "TZCYX" else "Q"))
    if out.count("C") > 1:
        raise ImageReadError(f"the TIFF has axes {axes}: two channel axes are not supported")
    return "".join(out)


def _ome_pixel_sizes(xml: str) -> dict:
    """``{axis: (size, unit)}`` and the time increment from OME-XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    pixels = next((el for el in root.iter() if el.tag.split("}")[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    out = {}
    for axis, key in (("X", "PhysicalSizeX"), ("Y", "PhysicalSizeY"), ("Z", "PhysicalSizeZ"),
                      ("T", "TimeIncrement")):
        if key in pixels.attrib:
            try:
                out[axis] = (float(pixels.attrib[key]), pixels.attrib.get(key + "Unit",
                                                                         "s" if axis == "T" else "µm"))
            except ValueError:
                pass
    return out


def _geotiff(page) -> tuple[list, dict, tuple]:
    """GeoTIFF extratags, ``{axis: (size, unit)}`` and the map origin of pixel (0, 0)'s centre."""
    tags = []
    for code in GEOTIFF_TAGS:
        tag = page.tags.get(code)
        if tag is not None:
            value = tag.value
            if isinstance(value, np.ndarray):
                value = tuple(value.tolist())
            tags.append((code, int(tag.dtype), tag.count, value, False))
    if not tags:
        return [], {}, (0.0, 0.0)
    sizes, origin = {}, (0.0, 0.0)
    keys = {}
    geokeys = page.tags.get(34735)
    if geokeys is not None:
        v = list(geokeys.value)
        for k in range(4, 4 + 4 * v[3], 4):
            if v[k + 1] == 0:  # value stored in place
                keys[v[k]] = v[k + 3]
    model_type = keys.get(1024)  # 1 projected, 2 geographic
    unit = {9001: "m", 9002: "ft", 9003: "ftUS"}.get(keys.get(3076, 0), "m")  # 0: no unit key
    if model_type == 2:
        unit = "deg"
    pixel_is_point = keys.get(1025) == 2
    scale_tag, tie_tag = page.tags.get(33550), page.tags.get(33922)
    if scale_tag is not None:
        sx, sy = float(scale_tag.value[0]), float(scale_tag.value[1])
        sizes = {"X": (sx, unit), "Y": (-sy, unit)}  # rows go south on a north-up raster
        if tie_tag is not None:
            i, j, _, x, y, _ = (float(t) for t in tie_tag.value[:6])
            half = 0.0 if pixel_is_point else 0.5
            origin = (y - (half - j) * sy, x + (half - i) * sx)
    elif page.tags.get(34264) is not None:
        m = [float(t) for t in page.tags.get(34264).value]
        if m[1] == 0 and m[4] == 0:  # no rotation: a scale and an offset
            sizes = {"X": (m[0], unit), "Y": (m[5], unit)}
            half = 0.0 if pixel_is_point else 0.5
            origin = (m[7] + half * m[5], m[3] + half * m[0])
    return tags, sizes, origin


def _read_tiff(path: Path) -> ImageStack:
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError) as err:
        raise ImageReadError(f"cannot read '{path}' as TIFF: {err}") from None
    try:
        series = tif.series[0]
        series.shape  # noqa: B018 - raises for some damaged files
    except Exception:  # an 8-byte file, no page at all...: tifffile raises IndexError and others
        tif.close()
        raise ImageReadError(f"cannot read '{path}' as TIFF: it holds no readable image (the file "
                             "is truncated or not a TIFF)") from None
    try:
        _check_tiff_complete(tif, series, path)
    except ImageReadError:
        tif.close()
        raise
    axes = _tiff_axes(series.axes)
    notes = []
    ij0 = tif.imagej_metadata if tif.is_imagej else None
    if ij0 and axes.count("C") == 1 and "Z" not in axes and "T" not in axes and _channels_only(ij0):
        # tifffile.imwrite(path, stack, imagej=True) without axes metadata stores a stack as
        # ImageJ "channels" in grayscale mode; Fiji itself marks real channels composite or color
        n = series.shape[axes.index("C")]
        axes = axes.replace("C", "Z")
        notes.append(f"'{path.name}' is an ImageJ stack of {n} images marked as channels in grayscale "
                     f"mode with no slices or frames (as tifffile writes a stack without axes "
                     f"metadata): read as {n} slices. If they really are the channels of one image, "
                     "save it as a composite (Fiji: Image > Color > Make Composite)")
    data: LazyArray
    try:
        # level 0: a pyramid's store would be a group of all its levels; this is the full size
        data = zarr.open_array(series.aszarr(level=0), mode="r")
    except Exception:  # a layout the zarr store cannot map: fall back to a memory map or memory
        try:
            data = tifffile.memmap(path, mode="r")
        except Exception:
            data = series.asarray()
    if tuple(data.shape) != tuple(series.shape):
        data = series.asarray().reshape(series.shape)
    sizes: dict = {}
    meta: dict = {"_open_files": [tif]}
    if notes:
        meta["notes"] = notes
    page = tif.pages.first
    ij = tif.imagej_metadata
    if tif.is_ome and tif.ome_metadata:
        sizes.update(_ome_pixel_sizes(tif.ome_metadata))
    elif ij:
        meta["imagej"] = {k: v for k, v in ij.items() if isinstance(v, (int, float, str))}
        unit = ij.get("unit")
        unit = None if unit in (None, "", "pixel") else str(unit).replace("\\u00B5", "µ")
        res = page.get_resolution() if hasattr(page, "get_resolution") else None
        if res and res[0] and res[1] and unit is not None:
            sizes["X"] = (1.0 / res[0], unit)
            sizes["Y"] = (1.0 / res[1], unit)
        if ij.get("spacing"):
            sizes["Z"] = (float(ij["spacing"]), unit)
        if ij.get("finterval"):
            sizes["T"] = (float(ij["finterval"]), ij.get("tunit", "s"))
    else:
        res = page.get_resolution() if hasattr(page, "get_resolution") else None
        runit = page.tags.get(296)
        unit = {2: "inch", 3: "cm"}.get(int(runit.value) if runit is not None else 2)
        if res and res[0] and res[1] and runit is not None and int(runit.value) in (2, 3):
            sizes["X"] = (1.0 / res[0], unit)
            sizes["Y"] = (1.0 / res[1], unit)
    geotags, geosizes, origin = _geotiff(page)
    sizes.update(geosizes)
    if not geotags:
        origin = (0.0, 0.0)
    scale = tuple(float(sizes[a][0]) if a in sizes else 1.0 for a in axes)
    units = tuple(sizes[a][1] if a in sizes else None for a in axes)
    return ImageStack(data, axes, scale, units, path, geotiff_tags=geotags, origin=origin, metadata=meta)


def _channels_only(ij: dict) -> bool:
    """ImageJ metadata with only ``channels`` (no slices or frames) in grayscale mode."""
    return (int(ij.get("channels", 1) or 1) > 1 and int(ij.get("slices", 1) or 1) == 1
            and int(ij.get("frames", 1) or 1) == 1
            and str(ij.get("mode", "grayscale")).lower() == "grayscale")


def _check_tiff_complete(tif, series, path: Path) -> None:
    """Refuse a TIFF whose pixels are not all in the file (a truncated copy or download).

    tifffile quietly reads what it can: a truncated ImageJ stack becomes its first page, a
    truncated plain stack has pages pointing past the end of the file.
    """
    size = path.stat().st_size
    n_read = int(np.prod([s for s, a in zip(series.shape, series.axes) if a not in "YXS"] or [1]))
    expected = None
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij and ij.get("images"):
        expected = int(ij["images"])
    elif tif.is_shaped and tif.shaped_metadata:
        shape = tif.shaped_metadata[0].get("shape")
        if shape:
            expected = int(np.prod([s for s in shape[:-2]] or [1]))
            if len(shape) >= 3 and shape[-1] in (3, 4) and tif.pages[0].samplesperpixel > 1:
                expected = int(np.prod(shape[:-3] or [1]))
    if expected is not None and n_read < expected:
        raise ImageReadError(
            f"'{path}' is truncated: it should hold {expected} images but only {n_read} can be "
            f"read (image {n_read} is the first missing one; the file has {size} bytes): copy or "
            "download it again"
        )
    offset = getattr(series, "dataoffset", None)
    if offset is not None and offset + series.nbytes > size:
        frame_bytes = max(1, series.nbytes // max(1, n_read))
        first_missing = max(0, (size - offset) // frame_bytes)
        raise ImageReadError(
            f"'{path}' is truncated: its {n_read} images need {offset + series.nbytes} bytes but the "
            f"file has {size} (image {first_missing} is the first incomplete one): copy or download it again"
        )
    if offset is not None:
        return  # contiguous data, checked as a whole (listing its pages would read every IFD)
    for k, page in enumerate(series.pages):
        if page is None or getattr(page, "parent", tif) is not tif:
            continue  # a page of another file of a multi-file OME-TIFF: its size is not ours
        ends = [o + c for o, c in zip(getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ()))]
        if any(e > size for e in ends) or (ends and not any(getattr(page, "databytecounts", ()))):
            raise ImageReadError(
                f"'{path}' is truncated: image {k} of {n_read} lies past the end of the file "
                f"({size} bytes): copy or download it again"
            )


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
        key=_natural_key,
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
        return _read_tiff(path)
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
