"""Array-likes: what napari-sam2 accepts as image data, and a view that adds a leading axis.

Stacks are never copied into one numpy array: the engine and the readers and writers take any
object with ``shape``, ``dtype``, ``ndim`` and ``__getitem__`` (numpy, dask, zarr, memmap, a lazy
video reader) and read it one frame at a time. Nothing here imports torch, Qt or napari.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

__all__ = ["LazyArray", "OneFrameStack"]


class LazyArray(Protocol):
    """An array read when indexed: anything with ``shape``, ``dtype``, ``ndim`` and ``[]``.

    numpy arrays, dask, zarr, memmaps, napari-sam2's own lazy readers all are.
    """

    @property
    def shape(self) -> tuple[int, ...]:
        """The length of each axis."""
        ...

    @property
    def dtype(self) -> Any:
        """The element type (a numpy dtype or anything ``np.dtype()`` accepts)."""
        ...

    @property
    def ndim(self) -> int:
        """The number of axes."""
        ...

    def __getitem__(self, key: Any) -> Any: ...


class OneFrameStack:
    """A single image seen as a stack of one frame: ``(1, *image.shape)``, without a copy.

    Code that walks a stack frame by frame (the engine's frame source, the readers' axis views,
    the label writers) then needs no special case for a single 2-D image. Frame ``0`` (or
    ``-1``) is the image itself; an index with more items reads only that part of the image.

    Parameters
    ----------
    image : array-like
        The image (any array-like, read only when indexed).
    """

    def __init__(self, image: LazyArray):
        self._image = image
        self.shape = (1, *image.shape)
        self.dtype = np.dtype(image.dtype)
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return 1

    def __getitem__(self, key: Any) -> Any:
        key = key if isinstance(key, tuple) else (key,)
        first = key[0]
        if not isinstance(first, (int, np.integer)) or first not in (0, -1):
            raise IndexError(f"a one-frame stack has frame 0 only, got index {first!r}")
        rest = key[1:]
        return np.asarray(self._image)[rest] if rest else self._image
