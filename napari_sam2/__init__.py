"""napari-sam2: SAM 2 segmentation and tracking for scientific image stacks.

The public API is re-exported lazily so that ``import napari_sam2`` (and opening napari with the
plugin installed) does not import torch or transformers.

>>> from napari_sam2 import load_model, Sam2Session  # doctest: +SKIP
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": "napari_sam2.engine.models",
    "Sam2Session": "napari_sam2.engine.session",
    "FrameSource": "napari_sam2.engine.frames",
    "Prompt": "napari_sam2.prompts",
}

# spelled out (not built from _LAZY) so that linters and type checkers see the public names
__all__ = ["__version__", "load_model", "Sam2Session", "FrameSource", "Prompt"]

if TYPE_CHECKING:  # pragma: no cover
    from napari_sam2.engine.frames import FrameSource
    from napari_sam2.engine.models import load_model
    from napari_sam2.engine.session import Sam2Session
    from napari_sam2.prompts import Prompt


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'napari_sam2' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
