"""Making a loaded network faster without changing what it computes.

* :func:`cache_position_encodings`: the image encoder's neck rebuilds its sine position
  encodings for every frame (transformers caches one shape, the neck asks for three in turn),
  though they depend only on the feature shapes; they are built once per shape and shared.
  Sharing also means every cached frame's features point to the same three tensors.
* :func:`compile_network`: ``torch.compile`` of the image encoder and the memory attention, the
  two parts that run on every frame, tried on a blank stack at load time so that a compiler that
  fails (no C compiler, an unsupported device or operator) falls back to the plain network with
  a warning rather than in the middle of a propagation.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

__all__ = ["cache_position_encodings", "compile_network"]


class _SharedSineEncoding(nn.Module):
    """A sine position encoding computed once per (shape, device, dtype) and then reused.

    The encoding module has no weights, so the network's state dict does not change.
    """

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self._built: dict = {}

    def forward(self, shape, device, dtype, mask=None):
        if mask is not None or torch.compiler.is_compiling():
            # a compiled graph folds the encoding into a constant itself
            if mask is not None:
                return self.inner(shape, device, dtype, mask=mask)
            return self.inner(shape, device, dtype)
        key = (tuple(shape), str(device), dtype, torch.is_inference_mode_enabled())
        value = self._built.get(key)
        if value is None:
            value = self.inner(shape, device, dtype)
            if len(self._built) >= 16:  # a handful of feature shapes per model; stay bounded
                self._built.clear()
            self._built[key] = value
        return value


def cache_position_encodings(network) -> int:
    """Share the image encoder's sine position encodings between frames.

    Parameters
    ----------
    network : a SAM 2 family transformers model
        Changed in place (idempotent).

    Returns
    -------
    int
        How many encoding modules now share their results.
    """
    count = 0
    encoder = getattr(network, "vision_encoder", None)
    if encoder is None:
        return 0
    for module in list(encoder.modules()):
        child = getattr(module, "position_encoding", None)
        if isinstance(child, _SharedSineEncoding):
            count += 1
        elif isinstance(child, nn.Module) and _is_sine_encoding(type(child).__name__):
            module.position_encoding = _SharedSineEncoding(child)
            count += 1
    return count


def _is_sine_encoding(name: str) -> bool:
    # Sam2SinePositionEmbedding (the neck's), Sam3SinePositionEmbedding, EdgeTamSinePositionEmbedding,
    # Sam2VideoPositionEmbeddingSine ...: weight-free (shape, device, dtype[, mask]) -> tensor
    return "Sine" in name and "Position" in name


def _targets(network) -> dict[str, nn.Module]:
    return {"image encoder": network.vision_encoder, "memory attention": network.memory_attention}


def compile_network(model, options: dict | None = None) -> bool:
    """``torch.compile`` the image encoder and memory attention of a loaded model, in place.

    Both are compiled, then run through a short propagation on a blank stack. If that fails,
    the modules go back to eager execution and a ``RuntimeWarning`` says why.

    Parameters
    ----------
    model : Sam2Model
    options : dict, optional
        Keyword arguments of ``torch.compile`` (``mode``, ``backend``, ``dynamic`` ...).

    Returns
    -------
    bool
        Whether the compiled modules are in use (also in ``model.info["compiled"]``).
    """
    options = dict(options or {})
    targets = _targets(model.network)
    for module in targets.values():
        module.compile(**options)
    try:
        _warm_up(model)
    except Exception as err:  # any compiler failure: run the network as it is
        for module in targets.values():
            # nn.Module.compile() keeps the compiled callable here; None restores eager calls
            module._compiled_call_impl = None
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        warnings.warn(
            f"torch.compile of the image encoder and memory attention failed on "
            f"{model.device.type} ({type(err).__name__}: {first[:300]}); running them uncompiled",
            RuntimeWarning, stacklevel=3,
        )
        model.info["compiled"] = False
        return False
    model.info["compiled"] = True
    return True


def _warm_up(model) -> None:
    """A prompt and a two-frame propagation: every compiled module runs, with 1 and 2 memories."""
    from napari_sam2.engine.session import Sam2Session

    side = 64
    ramp = np.add.outer(np.arange(side), np.arange(side)).astype(np.uint8)
    frames = np.stack([ramp, ramp[::-1], ramp[:, ::-1]])
    session = Sam2Session(model, frames, contrast=(0, 255), cache_frames=4)
    session.add_points(0, 1, [[side // 2, side // 2]], [1])
    for _ in session.propagate("forward"):
        pass
