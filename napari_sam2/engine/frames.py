"""Lazy frames: read, map intensities and preprocess one frame at a time, when the model needs it.

A stack is never converted as a whole (no float copy, no JPEG folder): :class:`FrameSource`
wraps any array-like with ``shape``, ``dtype``, ``ndim`` and ``__getitem__`` (numpy, dask, zarr,
memmap, a lazy video reader) and turns frame ``t`` into SAM 2's input on demand:

1. read ``frames[t]`` (only that frame is read or decoded);
2. pick the channels that feed SAM 2's three inputs (gray is repeated, RGB kept, any channels of a
   multichannel stack chosen by the caller);
3. map intensities with *one* contrast mapping for the whole stack (see
   :mod:`napari_sam2.conversions`);
4. resize to the model's square input and normalise with the model family's mean and standard
   deviation (ImageNet statistics for SAM 2 and EdgeTAM, 0.5 / 0.5 for SAM 3).

On a GPU, integer frames (8- and 16-bit) are uploaded as they are, through a pinned host
buffer, and mapped, resized and normalised on the device: a quarter (uint8) or half of the bytes
of a float32 frame cross the bus and the CPU does no per-pixel work. Float frames are mapped on
the host (their NaN check and float64 values need it) and uploaded as float32.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeAlias

import numpy as np

from napari_sam2.arrays import LazyArray, OneFrameStack
from napari_sam2.conversions import DEFAULT_PERCENTILES, normalize_intensity, robust_limits
from napari_sam2.engine.families import IMAGENET_MEAN, IMAGENET_STD
from napari_sam2.errors import Sam2InputError

if TYPE_CHECKING:
    import torch

__all__ = ["FrameSource", "StackView", "Channels", "Contrast", "ReadHook", "resolve_channels"]

#: Which channel(s) of a multichannel stack feed SAM 2: one index (gray) or up to three (RGB).
Channels: TypeAlias = int | Sequence[int] | None
#: ``"auto"``, one ``(low, high)`` pair, or one pair per chosen channel.
Contrast: TypeAlias = Literal["auto"] | Sequence[float] | Sequence[Sequence[float]] | np.ndarray
#: ``read_hook(t, frame)``: told of every raw frame a :class:`FrameSource` reads.
ReadHook: TypeAlias = Callable[[int, np.ndarray], object]

#: Integer dtypes uploaded to a GPU as they are (and the signed type of the same width that
#: carries the bits of an unsigned one torch cannot compute with on every device).
_DEVICE_DTYPES = {"uint8": None, "int8": None, "int16": None, "bool": None, "uint16": np.int16}

#: Frames and pixels sampled to estimate the automatic contrast limits.
_CONTRAST_SAMPLE_FRAMES = 16
_CONTRAST_SAMPLE_SIDE = 512


def _check_array_like(frames: Any) -> None:
    for attr in ("shape", "dtype", "ndim", "__getitem__"):
        if not hasattr(frames, attr):
            raise Sam2InputError(
                f"frames must be an array-like with shape, dtype, ndim and indexing (numpy, dask, "
                f"zarr, memmap...); got {type(frames).__name__} without '{attr}'. "
                "Wrap lists with numpy.asarray()."
            )
    if np.dtype(frames.dtype).kind not in "uifb":
        raise Sam2InputError(
            f"frames must hold numbers, got dtype {frames.dtype}; convert the stack to a numeric dtype"
        )


def resolve_channels(n_channels, channels):
    """(channel indices, or None for gray; whether the limits are shared) of a stack.

    ``n_channels``: the stack's channels (None: it has no channel axis). Raises
    :class:`Sam2InputError` when ``channels`` does not fit them (checked before a model loads).
    """
    if n_channels is None:
        if channels not in (None, 0, [0], (0,)):
            raise Sam2InputError("channels were given but the stack has no channel axis")
        return None, True
    if channels is None:
        if n_channels == 1:
            return (0,), True
        if n_channels in (3, 4):  # RGB(A): colour balance kept by one shared mapping
            return (0, 1, 2), True
        raise Sam2InputError(
            f"the stack has {n_channels} channels: choose which feed SAM 2 with channels= "
            f"(one index for gray, or up to three for red, green, blue), e.g. channels=[0, 1]"
        )
    chans = [channels] if isinstance(channels, (int, np.integer)) else list(channels)
    if not 1 <= len(chans) <= 3:
        raise Sam2InputError(f"choose one to three channels, got {len(chans)}: {chans}")
    for c in chans:
        if not isinstance(c, (int, np.integer)) or not 0 <= c < n_channels:
            raise Sam2InputError(
                f"channel {c!r} does not exist: the stack has channels 0..{n_channels - 1}"
            )
    return tuple(int(c) for c in chans), False


class StackView:
    """A lazy view of an n-D array as ``(T, Y, X[, C])`` frames, without copying.

    Parameters
    ----------
    array : array-like
        Any array-like (numpy, dask, zarr...).
    video_axis : int
        The axis that becomes the frame axis (time or z).
    spatial_axes : (int, int)
        The axes that become rows and columns.
    channel_axis : int, optional
        The axis that becomes the trailing channel axis.
    fixed : dict[int, int], optional
        Index for every other axis (e.g. the z slice of a (T, Z, Y, X) stack).
    """

    def __init__(self, array: LazyArray, video_axis: int, spatial_axes: tuple[int, int],
                 channel_axis: int | None = None, fixed: dict[int, int] | None = None) -> None:
        ndim = array.ndim
        axes = [video_axis, *spatial_axes] + ([channel_axis] if channel_axis is not None else [])
        axes = [a % ndim for a in axes]
        if len(set(axes)) != len(axes):
            raise Sam2InputError(f"video, spatial and channel axes must differ, got {axes}")
        fixed = {a % ndim: int(i) for a, i in (fixed or {}).items()}
        missing = [a for a in range(ndim) if a not in axes and a not in fixed]
        if missing:
            raise Sam2InputError(
                f"axes {missing} of the {ndim}-D stack are neither the video axis, image axes nor "
                "channels: give a fixed index for each (e.g. the z slice of a T, Z, Y, X stack)"
            )
        for a, i in fixed.items():
            if not 0 <= i < array.shape[a]:
                raise Sam2InputError(f"fixed index {i} is outside axis {a} of size {array.shape[a]}")
        self._array = array
        self._axes = axes
        self._fixed = fixed
        self.dtype = np.dtype(array.dtype)
        self.shape = tuple(array.shape[a] for a in axes)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, t: int) -> np.ndarray:
        if not isinstance(t, (int, np.integer)):
            raise TypeError("StackView supports integer frame indexing only")
        index: list[Any] = [slice(None)] * self._array.ndim
        for a, i in self._fixed.items():
            index[a] = i
        index[self._axes[0]] = int(t)
        frame = np.asarray(self._array[tuple(index)])
        # the remaining axes keep their original order; move them to (Y, X[, C])
        remaining = [a for a in range(self._array.ndim) if a not in self._fixed and a != self._axes[0]]
        order = [remaining.index(a) for a in self._axes[1:]]
        return np.transpose(frame, order)


class FrameSource:
    """Preprocess frames of a stack on demand for a SAM 2 model.

    Parameters
    ----------
    frames : array-like
        ``(T, Y, X)`` or ``(T, Y, X, C)``; a 2-D image ``(Y, X)`` or ``(Y, X, 3|4)`` is a
        one-frame stack.
    image_size : int
        The model's square input size.
    channels : int or sequence of int, optional
        Which channel(s) of a ``(T, Y, X, C)`` stack feed SAM 2's three inputs: one channel is
        shown as gray, two fill red and green, three fill red, green and blue. Required when
        ``C`` is not 1, 3 (RGB) or 4 (RGBA).
    contrast : "auto", (low, high) or sequence of (low, high)
        The intensity mapping for the whole stack. ``"auto"``: robust percentiles
        (0.5 %, 99.5 %) of up to 16 frames spread over the stack, one pair shared by the three
        channels of an RGB stack, one pair per chosen channel otherwise.
    rgb : bool, optional
        Whether a 3-D array is one RGB(A) image ``(Y, X, C)`` rather than a ``(T, Y, X)``
        stack. By default a last axis of 3 or 4 means RGB(A), as in napari.
    mean, std : sequence of 3 floats
        The network's input normalisation (``Sam2Model.image_mean`` / ``image_std``).
    read_hook : callable, optional
        Initial value of :attr:`read_hook`.

    Attributes
    ----------
    read_hook : callable or None
        Called as ``read_hook(t, frame)`` with every raw frame the source reads (see
        :meth:`read`), on the thread that reads it, before the frame is used. Set it to observe
        reads: the disk feature store hashes each frame as it passes, so that checking a stored
        entry never reads a frame a second time. It must not modify the frame.
    """

    def __init__(self, frames: LazyArray, image_size: int, *, channels: Channels = None,
                 contrast: Contrast = "auto", rgb: bool | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 read_hook: ReadHook | None = None) -> None:
        self.read_hook: ReadHook | None = read_hook
        _check_array_like(frames)
        self._array, has_channels = self._as_stack(frames, rgb)
        shape = tuple(int(s) for s in self._array.shape)
        if min(shape) == 0:
            raise Sam2InputError(
                f"the stack is empty (shape {shape}): it needs at least one frame of at least 1x1 pixel"
            )
        self.n_frames = shape[0]
        self.frame_shape: tuple[int, int] = (shape[1], shape[2])
        self.image_size = int(image_size)
        self.dtype = np.dtype(self._array.dtype)
        self.channels, self.shared_limits = resolve_channels(
            shape[3] if has_channels else None, channels
        )
        self.contrast = self._resolve_contrast(contrast)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise Sam2InputError(f"mean and std must be three numbers (std > 0), got {mean!r}, {std!r}")
        self._staging = threading.local()  # per-thread pinned upload buffer (CUDA)

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _as_stack(frames, rgb):
        ndim = frames.ndim
        if ndim == 2:
            return OneFrameStack(frames), False
        if ndim == 3:
            is_rgb = frames.shape[-1] in (3, 4) if rgb is None else bool(rgb)
            return (OneFrameStack(frames), True) if is_rgb else (frames, False)
        if ndim == 4:
            return frames, True
        raise Sam2InputError(
            f"frames must be (T, Y, X) or (T, Y, X, C), or one (Y, X[, C]) image; got {ndim}-D data "
            f"of shape {tuple(frames.shape)}. For (T, Z, Y, X) stacks pick one axis as the video axis "
            "and fix the other (napari_sam2.engine.frames.StackView)."
        )

    @property
    def _n_inputs(self) -> int:
        return 1 if self.channels is None else len(self.channels)

    def _resolve_contrast(self, contrast):
        if isinstance(contrast, str):
            if contrast != "auto":
                raise Sam2InputError(f"contrast must be 'auto' or (low, high) limits, got {contrast!r}")
            return self._auto_contrast()
        lim = np.asarray(contrast, dtype=np.float64)
        if lim.shape == (2,):
            lim = lim if self.shared_limits else np.tile(lim, (self._n_inputs, 1))
        elif lim.shape != (self._n_inputs, 2):
            raise Sam2InputError(
                f"contrast must be (low, high) or one (low, high) per chosen channel "
                f"({self._n_inputs}); got an array of shape {lim.shape}"
            )
        if not np.isfinite(lim).all() or np.any(lim[..., 1] <= lim[..., 0]):
            raise Sam2InputError(f"contrast limits must be finite with high > low, got {lim.tolist()}")
        return lim

    def _auto_contrast(self):
        n = self.n_frames
        picks = np.unique(np.linspace(0, n - 1, min(n, _CONTRAST_SAMPLE_FRAMES)).round().astype(int))
        h, w = self.frame_shape
        step = (max(1, h // _CONTRAST_SAMPLE_SIDE), max(1, w // _CONTRAST_SAMPLE_SIDE))
        samples = [self._select(self.read(t))[:: step[0], :: step[1]] for t in picks]
        stack = np.stack(samples)
        try:
            if self.shared_limits:
                return robust_limits(stack, DEFAULT_PERCENTILES)
            return robust_limits(stack, DEFAULT_PERCENTILES, axis=-1)
        except ValueError as err:
            raise Sam2InputError(str(err)) from None

    # ------------------------------------------------------------------ per frame
    def read(self, t: int) -> np.ndarray:
        """Raw frame ``t`` as the stack holds it, ``(Y, X)`` or ``(Y, X, C)``, passed to :attr:`read_hook`.

        Every read of the stack goes through here (contrast sampling and preprocessing too).
        """
        t = int(t)
        frame = np.asarray(self._array[t])
        if self.read_hook is not None:
            self.read_hook(t, frame)
        return frame

    def _select(self, frame: np.ndarray) -> np.ndarray:
        """(Y, X) gray or (Y, X, k) chosen channels."""
        if self.channels is None:
            return frame
        return frame[..., list(self.channels)]

    @property
    def signature(self) -> str:
        """Changes when anything that changes the model input changes (for feature caches)."""
        h = hashlib.sha256()
        h.update(repr((self._array.shape, str(self.dtype), self.channels, self.image_size,
                       self.mean, self.std)).encode())
        h.update(np.ascontiguousarray(self.contrast, dtype=np.float64).tobytes())
        return h.hexdigest()[:16]

    def _mapped(self, t: int) -> np.ndarray:
        """Frame ``t`` after the contrast mapping: float32 ``(Y, X)`` gray or ``(Y, X, 3)``."""
        frame = self._select(self.read(t))
        if frame.dtype.kind == "f" and not np.isfinite(frame).any():
            raise Sam2InputError(
                f"frame {t} holds no finite value (all NaN or infinite): SAM 2 cannot see anything "
                "there; skip it with start/stop or fill it"
            )
        mapped = normalize_intensity(frame, self.contrast)
        if mapped.ndim == 3 and mapped.shape[-1] == 1:  # one chosen channel: gray
            mapped = mapped[..., 0]
        if mapped.ndim == 3 and mapped.shape[-1] < 3:  # two channels: red and green, blue dark
            pad = np.zeros(mapped.shape[:2] + (3 - mapped.shape[-1],), np.float32)
            mapped = np.concatenate([mapped, pad], axis=-1)
        return mapped

    def normalized(self, t: int) -> np.ndarray:
        """Frame ``t`` as float32 ``(Y, X, 3)`` in [0, 1], after the stack's contrast mapping.

        Raises
        ------
        Sam2InputError
            If the frame holds no finite value (e.g. all NaN).
        """
        mapped = self._mapped(t)
        return np.repeat(mapped[..., None], 3, axis=-1) if mapped.ndim == 2 else mapped

    def model_input(self, t: int, device: str | torch.device = "cpu") -> torch.Tensor:
        """Frame ``t`` exactly as the network sees it, on ``device``.

        A float32 tensor ``(3, S, S)``, normalised with the model's mean and standard deviation.
        """
        import torch
        import torch.nn.functional as F

        device = torch.device(device)
        if device.type != "cpu" and self.dtype.name in _DEVICE_DTYPES:
            x = self._mapped_on_device(t, device)
        else:
            x = torch.from_numpy(self._mapped(t))
            if device.type != "cpu":
                x = self._upload(x, device)
        # gray: resize one channel and repeat it (the three would be resized identically)
        x = x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None]
        s = self.image_size
        if x.shape[-2:] != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std)[0]

    def _mapped_on_device(self, t: int, device):
        """:meth:`_mapped` for an integer frame, computed on ``device`` from the raw pixels.

        The same float32 arithmetic as :func:`napari_sam2.conversions.normalize_intensity`
        (float32 value minus float32 low, times float32 scale, clipped to [0, 1]).
        """
        import torch

        frame = np.ascontiguousarray(self._select(self.read(t)))
        carrier = _DEVICE_DTYPES[self.dtype.name]
        raw = self._upload(torch.from_numpy(frame.view(carrier) if carrier is not None else frame), device)
        if carrier is not None:  # unsigned bits in a signed tensor: undo the wrap-around
            raw = raw.to(torch.int32) & 0xFFFF
        lim = np.asarray(self.contrast, dtype=np.float64)
        low, high = (lim[0], lim[1]) if lim.ndim == 1 else (lim[:, 0], lim[:, 1])
        low32 = torch.as_tensor(np.asarray(low).astype(np.float32), device=device)
        scale32 = torch.as_tensor(np.asarray(1.0 / (high - low)).astype(np.float32), device=device)
        mapped = ((raw.to(torch.float32) - low32) * scale32).clamp_(0.0, 1.0)
        if mapped.ndim == 3 and mapped.shape[-1] == 1:  # one chosen channel: gray
            mapped = mapped[..., 0]
        if mapped.ndim == 3 and mapped.shape[-1] < 3:  # two channels: red and green, blue dark
            pad = mapped.new_zeros(mapped.shape[:2] + (3 - mapped.shape[-1],))
            mapped = torch.cat([mapped, pad], dim=-1)
        return mapped

    def _upload(self, x, device):
        """Copy a host tensor to ``device``; on CUDA through a reused pinned buffer, asynchronously."""
        import torch

        if device.type != "cuda":
            return x.to(device)
        staging = self._staging  # one buffer per thread: the prefetch thread has its own
        buf = getattr(staging, "buffer", None)
        if buf is None or buf.shape != x.shape or buf.dtype != x.dtype:
            buf = staging.buffer = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
        elif staging.event is not None:
            staging.event.synchronize()  # the last copy out of the buffer has finished
        buf.copy_(x)
        out = buf.to(device, non_blocking=True)
        staging.event = torch.cuda.Event()
        staging.event.record(torch.cuda.current_stream(device))
        return out


class LazyModelFrames(Sequence):
    """``processed_frames`` for transformers' inference session: frames made when read."""

    def __init__(self, source: FrameSource, device: str | torch.device = "cpu") -> None:
        self._source = source
        self._device = device

    def __len__(self) -> int:
        return self._source.n_frames

    def __getitem__(self, t):
        return self._source.model_input(t, self._device)
