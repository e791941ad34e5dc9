"""Making a loaded network faster without changing what it computes.

* :func:`cache_position_encodings`: the image encoder's neck rebuilds its sine position
  encodings for every frame (transformers caches one shape, the neck asks for three in turn),
  though they depend only on the feature shapes; they are built once per shape and shared.
  Sharing also means every cached frame's features point to the same three tensors. The Hiera
  backbone resizes its learned position embedding (bicubic) for every frame too; that result is
  kept until the weights change.
* :func:`fast_rotary`: transformers' memory attention applies its 2-D rotary encoding as about
  eight elementwise passes over the queries and the (long) memory keys, and repeats the
  frequency tables over every memory frame in each of its eight attention calls per frame. The
  same rotation is one complex multiplication per tensor (as in Meta's SAM 2), with the
  frequencies built once per call of the memory attention. transformers' own attention
  ``forward`` runs unchanged; only the rotary function it calls is swapped, per module instance,
  after a numerical check against the original. :func:`compile_network` puts transformers' form
  back first (see :func:`plain_rotary`); so must anyone who compiles the network by hand.
* :func:`lean_attention`: transformers' Hiera attention (the image encoder's, in every block)
  computes attention weights it never uses (a scaled copy of the queries, a product and a
  softmax) before it calls the real attention; a copy of its ``forward`` without those lines is
  installed per module after checking that it gives the very same output (~5 % of the image
  encoder at 1024 px on a 2-core CPU). :func:`plain_rotary` takes it away too.
* :func:`compile_network`: ``torch.compile`` of the image encoder and the memory attention, the
  two parts that run on every frame, tried on a blank stack at load time so that a compiler that
  fails (no C compiler, an unsupported device or operator) falls back to the plain network with
  a warning rather than in the middle of a propagation.
"""

from __future__ import annotations

import types
import warnings
import weakref

import numpy as np
import torch
from torch import nn

from napari_sam2.engine import adapter

__all__ = ["cache_position_encodings", "compile_network", "fast_rotary", "install_shortcuts",
           "lean_attention", "plain_rotary"]


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
    """Share the image encoder's position encodings between frames.

    The neck's sine encodings (weight-free) and the Hiera backbone's position embedding (its
    learned 7 x 7 embedding resized bicubically to the feature size and tiled with the window
    embedding: ~70 ms a frame at 1024 px on a 2-core CPU) are built once per shape and reused.

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
            adapter.set_position_encoding(module, _SharedSineEncoding(child))
            count += 1
        if _cache_hiera_embedding(module):
            count += 1
    return count


def _cache_hiera_embedding(module) -> bool:
    """Give a Hiera backbone (``_get_pos_embed``) a cache of its resized position embedding."""
    installed = adapter.own_hiera_position_embedding(module)
    if installed is not None:
        return getattr(installed, "_napari_sam2_cached", False)
    original = adapter.hiera_position_embedding(module)
    found = [getattr(module, name, None) for name in ("pos_embed", "pos_embed_window")]
    weights = [w for w in found if isinstance(w, torch.Tensor)]
    if original is None or len(weights) != len(found):
        return False
    built: dict = {}

    def _get_pos_embed(hw):
        training = torch.is_grad_enabled() and any(w.requires_grad for w in weights)
        if training or torch.compiler.is_compiling():
            return original(module, hw)  # training needs its graph; a compiler folds it itself
        device = weights[0].device
        key = (tuple(int(x) for x in hw), str(device), torch.is_inference_mode_enabled(),
               torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type),
               # weights changed in place (or replaced) give a new embedding
               tuple((w.data_ptr(), w._version, w.dtype) for w in weights))
        value = built.get(key)
        if value is None:
            # laid out as the features it is added to (transformers' is a permuted view, which
            # makes that addition slower): the same values, so the same sum
            value = original(module, hw).contiguous()
            if len(built) >= 8:  # a few input sizes per model; stay bounded
                built.clear()
            built[key] = value
        return value

    _get_pos_embed._napari_sam2_cached = True  # type: ignore[attr-defined]
    adapter.set_hiera_position_embedding(module, _get_pos_embed)
    return True


def _is_sine_encoding(name: str) -> bool:
    # Sam2SinePositionEmbedding (the neck's), Sam3SinePositionEmbedding, EdgeTamSinePositionEmbedding,
    # Sam2VideoPositionEmbeddingSine ...: weight-free (shape, device, dtype[, mask]) -> tensor
    return "Sine" in name and "Position" in name


class _ComplexRotary:
    """``apply_rotary_pos_emb_2d`` of transformers' SAM 2 memory attention, as complex products.

    transformers rotates pairs of channels with real arithmetic: ``x * cos + rotate(x) * sin``
    in float32, then casts back; for the keys it repeats ``cos``/``sin`` over every memory frame
    and concatenates the unrotated object-pointer tokens again. Here each tensor is multiplied
    once by ``cos + i sin`` (the same rotation), the repeated tables are kept for the call's
    other layers, and the keys are written straight into their final tensor.

    Parameters
    ----------
    original : callable
        transformers' function, used for any call outside the shapes handled here.
    """

    def __init__(self, original):
        self.original = original
        # (length, inference mode) -> (weakref to cos, weakref to sin, complex factors): the
        # memory attention builds new cos/sin for every call, used by all its layers
        self._tables: dict = {}

    def factors(self, cos: torch.Tensor, sin: torch.Tensor, length: int) -> torch.Tensor:
        """``cos + i sin`` per channel pair, repeated along the tokens up to ``length``."""
        key = (length, torch.is_inference_mode_enabled())
        entry = self._tables.get(key)
        if entry is not None and entry[0]() is cos and entry[1]() is sin:
            return entry[2]
        table = torch.complex(cos[..., 0::2].float(), sin[..., 0::2].float())
        if length != table.shape[-2]:
            # the memory frames' tokens follow one another, each frame on the query grid
            table = table.repeat(*([1] * (table.dim() - 2)), length // table.shape[-2], 1)
        if len(self._tables) >= 8:  # one query length and a few key lengths per model
            self._tables.clear()
        self._tables[key] = (weakref.ref(cos), weakref.ref(sin), table)
        return table

    def __call__(self, q, k, cos, sin, num_k_exclude_rope: int = 0, repeat_freqs_k: bool = False):
        n_q = q.shape[-2]
        n_rot = k.shape[-2] - num_k_exclude_rope
        # a compiler fuses transformers' form into one kernel itself (and complex numbers are
        # not what it handles best); Apple's MPS backend lacks some complex operations
        usual = (
            not torch.compiler.is_compiling() and q.device.type != "mps"
            and q.dim() == k.dim() and cos.shape == sin.shape and cos.shape[-2] == n_q
            and cos.shape[-1] == q.shape[-1] == k.shape[-1] and q.shape[-1] % 2 == 0
            and cos.dim() <= q.dim() and 0 <= num_k_exclude_rope <= k.shape[-2]
        )
        if usual and n_rot > 0:
            repeat = repeat_freqs_k and n_rot != n_q
            usual = (n_rot % n_q == 0) if repeat else n_rot == n_q
        if not usual:
            return self.original(q, k, cos, sin, num_k_exclude_rope=num_k_exclude_rope,
                                 repeat_freqs_k=repeat_freqs_k)
        q_out = _rotated(q, self.factors(cos, sin, n_q)).to(q.dtype)
        if n_rot == 0:
            return q_out, k
        k_out = torch.empty(k.shape, dtype=k.dtype, device=k.device)
        k_out[..., :n_rot, :] = _rotated(k[..., :n_rot, :], self.factors(cos, sin, n_rot))
        if num_k_exclude_rope:
            k_out[..., n_rot:, :] = k[..., n_rot:, :]
        return q_out, k_out


def _rotated(x: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """``x`` (float32, as transformers does it) rotated pairwise by complex ``factors``."""
    pairs = x.float().reshape(*x.shape[:-1], -1, 2)
    if pairs.stride(-1) != 1 or any(s % 2 for s in pairs.stride()[:-1]):
        pairs = pairs.contiguous()
    return torch.view_as_real(torch.view_as_complex(pairs) * factors).flatten(-2)


_ROTARY = "apply_rotary_pos_emb_2d"


def fast_rotary(network) -> int:
    """Give the memory attention's rotary encoding a faster form, in place (idempotent).

    Each attention module whose ``forward`` calls transformers' ``apply_rotary_pos_emb_2d``
    (SAM 2, SAM 3 tracker) gets a copy of that same ``forward`` that calls
    :class:`_ComplexRotary` instead. The new function is first checked against the original on
    random inputs shaped like the model's (queries, memory keys, excluded pointer tokens); where
    it differs by more than float rounding, the module is left as it is. Other families
    (EdgeTAM's rotary attention has another form) are left as they are.

    Parameters
    ----------
    network : a SAM 2 family transformers model

    Returns
    -------
    int
        How many attention modules use the faster form.
    """
    memory_attention = getattr(network, "memory_attention", None)
    if memory_attention is None:
        return 0
    count = 0
    # per transformers module: the names a forward reads, with the fast rotary (None: it did not
    # agree); one per network, so that a frame's eight attention calls share its tables
    scopes: dict[int, dict | None] = {}
    for module in memory_attention.modules():
        if _has_fast_rotary(module):
            count += 1
            continue
        if adapter.own_forward(module) is not None:  # someone else's forward: left alone
            continue
        forward = type(module).forward
        code = getattr(forward, "__code__", None)
        if code is None or _ROTARY not in code.co_names or _ROTARY not in forward.__globals__:
            continue
        original = forward.__globals__[_ROTARY]
        key = id(forward.__globals__)
        if key not in scopes:
            rotary = _ComplexRotary(original)
            scopes[key] = {**forward.__globals__, _ROTARY: rotary} if _agrees(rotary, original) else None
        scope = scopes[key]
        if scope is None:
            continue
        clone = types.FunctionType(code, scope, forward.__name__, forward.__defaults__,
                                   forward.__closure__)
        clone.__kwdefaults__ = forward.__kwdefaults__
        clone.__doc__ = forward.__doc__
        clone._napari_sam2_rotary = True  # type: ignore[attr-defined]
        adapter.set_forward(module, clone)
        count += 1
    return count


def install_shortcuts(model) -> None:
    """Install the faster forwards (checked against transformers' own) and note them in ``model.info``.

    :func:`fast_rotary`, :func:`lean_attention` and
    :func:`napari_sam2.engine.shared_query.share_first_layer`; :func:`plain_rotary` undoes them.
    """
    from napari_sam2.engine.shared_query import share_first_layer

    model.info["fast_rotary"] = fast_rotary(model.network)
    model.info["lean_attention"] = lean_attention(model.network)
    model.info["shared_first_layer"] = share_first_layer(model.network)


def plain_rotary(network) -> int:
    """Give the network transformers' own forwards back (undoes every shortcut).

    Undoes :func:`fast_rotary`, :func:`lean_attention` and
    :func:`napari_sam2.engine.shared_query.share_first_layer`. ``torch.compile`` needs it: it
    fuses transformers' rotary form into one kernel itself, and its graph capture resolves the
    names a ``forward`` reads in the module that defined the function, not in the copy's own
    namespace, so a compiled copy fails its guards.

    Returns
    -------
    int
        How many modules went back.
    """
    from napari_sam2.engine.shared_query import has_shared_first_layer

    count = 0
    for module in network.modules():
        if _has_fast_rotary(module) or _has_lean_attention(module) or has_shared_first_layer(module):
            adapter.restore_forward(module)
            count += 1
    return count


def lean_attention(network) -> int:
    """Skip the image encoder's unused attention weights, in place (idempotent).

    Every ``Sam2MultiScaleAttention`` (the Hiera encoder of SAM 2, and of an EdgeTAM built on
    it; SAM 3's ViT has none) whose class ``forward`` is transformers' own gets
    :func:`_lean_forward` as its ``forward``, once a run of both on a random input gave the
    same tensor bit for bit.

    Returns
    -------
    int
        How many attention modules run without the unused weights.
    """
    try:
        from transformers.models.sam2 import modeling_sam2 as sam2
    except ImportError:  # pragma: no cover - transformers always has it where SAM 2 loads
        return 0
    kind = getattr(sam2, "Sam2MultiScaleAttention", None)
    encoder = getattr(network, "vision_encoder", None)
    if kind is None or encoder is None:
        return 0
    count = 0
    for module in encoder.modules():
        if _has_lean_attention(module):
            count += 1
        elif type(module) is kind and adapter.own_forward(module) is None and _same_output(module):
            adapter.set_forward(module, _lean_forward)
            count += 1
    return count


def _lean_forward(self, hidden_states: torch.Tensor, **kwargs) -> torch.Tensor:
    """transformers' ``Sam2MultiScaleAttention.forward`` without the attention weights it drops.

    The helpers are those of the module that defines the class (read at each call).
    """
    names = type(self).forward.__globals__
    batch_size, height, width, _ = hidden_states.shape
    qkv = self.qkv(hidden_states).reshape(batch_size, height * width, 3, self.num_attention_heads, -1)
    query, key, value = torch.unbind(qkv, 2)
    if self.query_stride:  # query pooling at the stage changes
        query = names["do_pool"](query.reshape(batch_size, height, width, -1), self.query_stride)
        height, width = query.shape[1:3]
        query = query.reshape(batch_size, height * width, self.num_attention_heads, -1)
    attention = names["ALL_ATTENTION_FUNCTIONS"].get_interface(
        adapter.attention_implementation(self), names["eager_attention_forward"])
    out, _ = attention(self, query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2),
                       attention_mask=None, is_causal=self.is_causal, scaling=self.scale, **kwargs)
    return self.proj(out.reshape(batch_size, height, width, -1))


_lean_forward._napari_sam2_lean = True  # type: ignore[attr-defined]


def _has_lean_attention(module) -> bool:
    forward = adapter.own_forward(module)
    return isinstance(forward, types.MethodType) and getattr(forward.__func__, "_napari_sam2_lean", False)


def _same_output(module) -> bool:
    """Whether :func:`_lean_forward` gives this module's own output, bit for bit, on a random input."""
    try:
        weight = module.qkv.weight
        side = 2 * max(1, *(module.query_stride or (1,)))
        x = torch.randn(1, side, side, weight.shape[1], generator=torch.Generator().manual_seed(0))
        x = x.to(device=weight.device, dtype=weight.dtype)
        with torch.inference_mode():
            return torch.equal(_lean_forward(module, x), type(module).forward(module, x))
    except Exception:  # another transformers version: keep its own forward
        return False


def _has_fast_rotary(module) -> bool:
    forward = adapter.own_forward(module)
    return isinstance(forward, types.MethodType) and getattr(forward.__func__, "_napari_sam2_rotary", False)


def _agrees(fast, original) -> bool:
    """Whether ``fast`` gives ``original``'s rotations on random inputs (float rounding apart)."""
    gen = torch.Generator().manual_seed(0)
    n, dim = 16, 8
    angles = torch.rand(1, n, dim // 2, generator=gen) * 6.3
    cos = angles.cos().repeat_interleave(2, dim=-1)
    sin = angles.sin().repeat_interleave(2, dim=-1)
    q = torch.randn(2, 1, n, dim, generator=gen)
    cases = [(torch.randn(2, 1, n, dim, generator=gen), 0, False),       # self-attention
             (torch.randn(2, 1, 3 * n + 4, dim, generator=gen), 4, True),  # memories + pointers
             (torch.randn(2, 1, 4, dim, generator=gen), 4, True)]          # pointers only
    try:
        for k, exclude, repeat in cases:
            want = original(q, k, cos, sin, num_k_exclude_rope=exclude, repeat_freqs_k=repeat)
            got = fast(q, k, cos, sin, num_k_exclude_rope=exclude, repeat_freqs_k=repeat)
            for a, b in zip(got, want):
                if a.shape != b.shape or a.dtype != b.dtype or not torch.allclose(a, b, atol=1e-5):
                    return False
    except Exception:  # a transformers version with another signature: keep its own
        return False
    return True


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
    plain_rotary(model.network)  # the compiler fuses transformers' form itself
    model.info["fast_rotary"] = model.info["lean_attention"] = model.info["shared_first_layer"] = 0
    for module in targets.values():
        module.compile(**options)
    try:
        _warm_up(model)
    except Exception as err:  # any compiler failure: run the network as it is
        for module in targets.values():
            adapter.uncompile(module)
        install_shortcuts(model)
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
