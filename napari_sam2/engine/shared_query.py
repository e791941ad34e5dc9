"""Memory attention for a batch of objects: what depends on the frame alone runs once.

SAM 2's memory attention starts each layer with a self-attention over the frame's features and
then lets them attend to an object's memories. In the first layer, everything before that
cross-attention (the features plus their position encoding, the first layer norm, the
self-attention and the second layer norm) depends on the frame only, not on the object. When
several objects are tracked together (``Sam2Session(batch_objects=True)``) the engine hands
the memory attention the frame's features expanded along the batch (stride 0), and
transformers computes that part once per object. :func:`share_first_layer` installs a
``forward`` that computes it once per frame and then goes on per object, as transformers does.

It is installed per memory-attention module at load, once a run of both on random inputs gave
the same result (float rounding apart: a batch of one and a batch of many may round a matrix
product differently). Any other call (a batch of one, features that are not expanded, a module
of another form) runs transformers' own ``forward``.
"""

from __future__ import annotations

import types

import torch

from napari_sam2.engine import adapter

__all__ = ["has_shared_first_layer", "share_first_layer"]


def share_first_layer(network) -> int:
    """Install the shared first layer on the network's memory attention (idempotent).

    Parameters
    ----------
    network : a SAM 2 family transformers model

    Returns
    -------
    int
        1 when the memory attention computes its first layer's frame-only part once per batch,
        0 when it was left as it is (no memory attention, another form, or a differing result).
    """
    module = getattr(network, "memory_attention", None)
    if module is None:
        return 0
    if has_shared_first_layer(module):
        return 1
    if adapter.own_forward(module) is not None or not _agrees(module):
        return 0
    adapter.set_forward(module, _forward)
    return 1


def has_shared_first_layer(module) -> bool:
    """Whether ``module`` (a memory attention) runs :func:`share_first_layer`'s ``forward``."""
    forward = adapter.own_forward(module)
    return isinstance(forward, types.MethodType) and getattr(forward.__func__, "_napari_sam2_shared", False)


def _expanded(x: torch.Tensor | None) -> bool:
    """Whether every batch entry of a ``(tokens, batch, channels)`` tensor is the same memory."""
    return x is None or (x.dim() == 3 and x.stride(1) == 0)


def _forward(self, current_vision_features, memory, current_vision_position_embeddings=None,
             memory_posision_embeddings=None, num_object_pointer_tokens: int = 0):
    """transformers' ``Sam2VideoMemoryAttention.forward``, with the first layer's frame-only part once.

    The argument names (with transformers' spelling) are the original's.
    """
    original = type(self).forward
    vision, vision_pos = current_vision_features, current_vision_position_embeddings
    batch = vision.shape[1] if vision.dim() == 3 else 1
    if batch < 2 or not (_expanded(vision) and _expanded(vision_pos)) or memory_posision_embeddings is None:
        return original(self, current_vision_features, memory, current_vision_position_embeddings,
                        memory_posision_embeddings, num_object_pointer_tokens)
    # the frame's part, for one batch entry: (tokens, 1, C) -> (1, 1, tokens, C)
    output = vision[:, :1]
    if vision_pos is not None:
        output = output + 0.1 * vision_pos[:, :1]
    output = output.transpose(0, 1)
    rope = self.rotary_emb(output, self.position_ids)
    first = self.layers[0]
    queries = output.unsqueeze(1)
    query = first.layer_norm1(queries)
    query, _ = first.self_attn(query=query, key=query, value=query, position_embeddings=rope)
    queries = queries + first.dropout1(query)
    query = first.layer_norm2(queries)
    # per object from here on, as transformers' layer does it
    queries, query = queries.expand(batch, -1, -1, -1), query.expand(batch, -1, -1, -1)
    memory = memory.transpose(0, 1).unsqueeze(1)
    memory_pos = memory_posision_embeddings.transpose(0, 1).unsqueeze(1)
    query, _ = first.cross_attn_image(query=query, key=memory + memory_pos, value=memory,
                                      position_embeddings=rope,
                                      num_k_exclude_rope=num_object_pointer_tokens)
    queries = queries + first.dropout2(query)
    query = first.layer_norm3(queries)
    query = first.linear2(first.dropout(first.activation(first.linear1(query))))
    output = queries + first.dropout3(query)
    for layer in self.layers[1:]:
        output = layer(queries=output, keys=memory, key_point_embedding=memory_pos,
                       rope_position_embeddings=rope, num_k_exclude_rope=num_object_pointer_tokens)
    return self.layer_norm(output).transpose(0, 1)


_forward._napari_sam2_shared = True  # type: ignore[attr-defined]


def _agrees(module) -> bool:
    """Whether :func:`_forward` gives the module's own output on random inputs, float rounding apart."""
    try:
        first = module.layers[0]
        channels = first.layer_norm1.normalized_shape[0]
        memory_channels = first.cross_attn_image.k_proj.in_features
        tokens = module.position_ids.shape[0]
        weight = first.linear1.weight
        gen = torch.Generator().manual_seed(0)

        def rand(*shape):
            return torch.randn(*shape, generator=gen).to(device=weight.device, dtype=weight.dtype)

        batch, pointers = 3, 4
        vision, vision_pos = rand(tokens, 1, channels), rand(tokens, 1, channels)
        memory = rand(2 * tokens + pointers, batch, memory_channels)
        memory_pos = rand(2 * tokens + pointers, batch, memory_channels)
        args = (vision.expand(-1, batch, -1), memory, vision_pos.expand(-1, batch, -1), memory_pos, pointers)
        with torch.inference_mode():
            want = type(module).forward(module, *args)
            got = _forward(module, *args)
        return got.shape == want.shape and bool(torch.allclose(got, want, rtol=1e-4, atol=1e-5))
    except Exception:  # another transformers version or form: keep its own forward
        return False
