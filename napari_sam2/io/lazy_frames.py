"""Frames read or decoded one at a time: videos, GIFs and folders of images.

Each reader is an array-like ``(N, ...)`` that produces only the frames asked for (keyframe
seeking and a small cache for video), never the whole stack at once. Nothing here imports
torch, Qt or napari.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from napari_sam2.errors import ImageReadError, one_line

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from av import VideoFrame

__all__ = ["LazyFrames", "VideoFrames", "GifFrames", "ImageFolderFrames", "natural_key", "VIDEO_SUFFIXES",
           "TIFF_SUFFIXES", "IMAGE_SUFFIXES"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".gif")
TIFF_SUFFIXES = (".tif", ".tiff")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")

#: Decoded video frames kept for re-use (backward propagation reads a GOP in reverse).
_VIDEO_CACHE_BYTES = 256 * 2**20


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


def natural_key(path: Path) -> list:
    """Sort key of a file name in natural order (``img2`` before ``img10``)."""
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
        why = one_line(err)
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
        why = one_line(err)
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
