"""Loading SAM 2 models: short names, hub ids, local folders, Meta ``.pt`` checkpoints.

:class:`Sam2Model` is what a :class:`~napari_sam2.engine.session.Sam2Session` runs: the
transformers network, the device it lives on and how to enter inference mode on it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["Sam2Model", "load_model", "as_sam2_model", "ModelLoadError", "MODEL_IDS"]

#: Short names of the released SAM 2.1 checkpoints and their Hugging Face hub ids.
MODEL_IDS = {
    "sam2.1-tiny": "facebook/sam2.1-hiera-tiny",
    "sam2.1-small": "facebook/sam2.1-hiera-small",
    "sam2.1-base-plus": "facebook/sam2.1-hiera-base-plus",
    "sam2.1-large": "facebook/sam2.1-hiera-large",
}


class ModelLoadError(ValueError):
    """A model could not be found, downloaded or read; the message says how to fix it."""


@dataclass
class Sam2Model:
    """A SAM 2 network ready for inference.

    Attributes
    ----------
    network : transformers.Sam2VideoModel
        The network, in eval mode, on ``device``.
    device : torch.device
        Where it runs.
    name : str
        Where it came from (short name, hub id, folder or file), for logs and cache keys.
    autocast_dtype : torch.dtype or None
        Mixed precision used inside :meth:`inference` (bfloat16 on CUDA), or None.
    """

    network: Any
    device: torch.device
    name: str = "custom"
    autocast_dtype: torch.dtype | None = None
    info: dict = field(default_factory=dict)

    @property
    def image_size(self) -> int:
        """Side of the square model input, in pixels (1024 for the released checkpoints)."""
        return int(self.network.config.image_size)

    @property
    def signature(self) -> str:
        """A short string that changes when the weights or the precision change."""
        return f"{self.name}|{self.image_size}|{self.autocast_dtype}|{self.info.get('sha256', '')}"

    @contextlib.contextmanager
    def inference(self):
        """Enter inference mode (and autocast on CUDA) for the calling thread.

        Both are thread-local in torch, so every worker thread that runs the network enters
        this itself.
        """
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.autocast_dtype is not None:
                stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype))
            yield


def as_sam2_model(model) -> Sam2Model:
    """Accept a :class:`Sam2Model` or a bare transformers ``Sam2VideoModel``."""
    if isinstance(model, Sam2Model):
        return model
    from transformers import Sam2VideoModel

    if isinstance(model, Sam2VideoModel):
        device = next(model.parameters()).device
        return Sam2Model(network=model.eval(), device=device, name="custom")
    raise TypeError(
        f"expected a model from napari_sam2.load_model() or a transformers Sam2VideoModel, "
        f"got {type(model).__name__}"
    )


def load_model(name_or_path="sam2.1-tiny", *, device="auto", progress=None, **kwargs) -> Sam2Model:
    """Load a SAM 2 model (see the module docstring). Not written yet."""
    raise NotImplementedError
