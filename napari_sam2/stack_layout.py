"""How a napari image layer maps onto SAM 2 frames (Qt-free, testable without a viewer).

An image layer of any dimensionality becomes a stack of 2-D frames: one data axis is the video
axis (time or z), the last two (non-channel) axes are rows and columns, and every other axis is
held at a fixed index (e.g. the z slice of a (T, Z, Y, X) stack). The target Labels layer has the
image's shape without its channel axis, so the same index selects a frame in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_sam2.engine.frames import StackView

__all__ = ["StackLayout", "LayerChannels", "parse_channels"]


@dataclass
class StackLayout:
    """Which data axes of an image layer are the video axis, the frame and the fixed axes.

    Parameters
    ----------
    shape : tuple of int
        The image data's shape (channels last for RGB layers).
    rgb : bool
        Whether the last axis is RGB(A) channels.
    video_axis : int
        Data axis that is the video axis (ignored for a single 2-D image).
    fixed : dict[int, int]
        Index of every other non-spatial axis.
    """

    shape: tuple
    rgb: bool = False
    video_axis: int = 0
    fixed: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        """Number of non-channel axes (the labels' dimensionality)."""
        return len(self.shape) - (1 if self.rgb else 0)

    @property
    def labels_shape(self) -> tuple:
        """Shape of the matching label array (the image's, without an RGB axis)."""
        return tuple(self.shape[: self.ndim])

    @property
    def spatial_axes(self) -> tuple[int, int]:
        """The row and column axes (the last two of the label array)."""
        return (self.ndim - 2, self.ndim - 1)

    @property
    def other_axes(self) -> list[int]:
        """Axes that are neither spatial nor the video axis."""
        return [a for a in range(self.ndim - 2) if a != self.video_axis]

    @property
    def is_single_image(self) -> bool:
        """A 2-D image: one frame."""
        return self.ndim == 2

    @property
    def n_frames(self) -> int:
        """Frames along the tracked axis (1 for a single image)."""
        return 1 if self.is_single_image else int(self.shape[self.video_axis])

    def validate(self) -> None:
        """Raise ValueError, naming the problem, if the layout cannot be tracked."""
        if self.ndim < 2:
            raise ValueError("the image layer must have at least two dimensions")
        if not self.is_single_image and not 0 <= self.video_axis < self.ndim - 2:
            raise ValueError(
                f"the video axis must be one of the axes 0..{self.ndim - 3} (the last two are the image)"
            )
        for a in self.other_axes:
            i = self.fixed.get(a, 0)
            if not 0 <= i < self.shape[a]:
                raise ValueError(f"index {i} is outside axis {a} of size {self.shape[a]}")

    def frames(self, data):
        """The engine's view of the data: 2-D image, (T, Y, X[, C]) array or a lazy view."""
        self.validate()
        if self.is_single_image:
            return data
        if self.ndim == 3 and self.video_axis == 0:
            return data
        return StackView(data, self.video_axis, self.spatial_axes,
                         channel_axis=self.ndim if self.rgb else None,
                         fixed={a: self.fixed.get(a, 0) for a in self.other_axes})

    def index(self, frame: int) -> tuple:
        """Index of frame ``frame`` in the labels (and in the image without channels)."""
        idx: list = [slice(None)] * self.ndim
        if not self.is_single_image:
            idx[self.video_axis] = int(frame)
            for a in self.other_axes:
                idx[a] = int(self.fixed.get(a, 0))
        return tuple(idx)

    def split(self, data_coords) -> tuple[int, float, float]:
        """A point in the layer's data coordinates as ``(frame, row, col)``."""
        c = np.asarray(data_coords, dtype=float)[-self.ndim:]
        frame = 0 if self.is_single_image else int(np.floor(c[self.video_axis] + 0.5))
        return frame, float(c[-2]), float(c[-1])

    def on_this_stack(self, data_coords) -> bool:
        """Whether a point lies on the frames this layout feeds to SAM 2 (fixed axes match)."""
        c = np.asarray(data_coords, dtype=float)[-self.ndim:]
        return all(int(np.floor(c[a] + 0.5)) == self.fixed.get(a, 0) for a in self.other_axes)


class LayerChannels:
    """Several same-shape arrays seen as one array with a trailing channel axis, lazily.

    napari shows a multichannel stack as one image layer per channel; this lets up to three of
    them feed SAM 2's red, green and blue inputs without stacking (copying) the data. Indexing
    reads only the requested part of every layer.

    Parameters
    ----------
    arrays : sequence of array-like
        Arrays of one shape (numpy, dask, zarr...).
    """

    def __init__(self, arrays):
        arrays = list(arrays)
        if not arrays:
            raise ValueError("LayerChannels needs at least one array")
        shape = tuple(arrays[0].shape)
        for a in arrays[1:]:
            if tuple(a.shape) != shape:
                raise ValueError(
                    f"channel layers must have the same shape; got {shape} and {tuple(a.shape)}: "
                    "choose layers of the same stack"
                )
        self._arrays = arrays
        self.shape = (*shape, len(arrays))
        self.ndim = len(self.shape)
        self.dtype = np.result_type(*[np.dtype(a.dtype) for a in arrays])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            raise TypeError("LayerChannels does not support Ellipsis indexing")
        index = index + (slice(None),) * (self.ndim - len(index))
        spatial, channel = index[:-1], index[-1]
        parts = [np.asarray(a[spatial]) for a in self._arrays]
        return np.stack(parts, axis=-1)[..., channel]


def parse_channels(text: str) -> list[int] | None:
    """``"0, 2"`` -> ``[0, 2]``; an empty string -> None (use the layer as napari shows it).

    Raises
    ------
    ValueError
        If the text is not one to three comma-separated non-negative integers.
    """
    text = text.strip()
    if not text:
        return None
    try:
        chans = [int(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ValueError(
            f"channels must be one to three channel numbers separated by commas (e.g. 0 or 0,2), "
            f"got {text!r}"
        ) from None
    if not 1 <= len(chans) <= 3 or min(chans) < 0:
        raise ValueError(
            f"choose one to three channels (numbers from 0, e.g. 0 or 0,2), got {text!r}"
        )
    return chans
