"""Inputs of transformers' memory attention, shaped as a propagated frame's."""

from __future__ import annotations

import numpy as np
import torch


def memory_attention_inputs(config, objects=3, memories=3, pointers=8, seed=0, expanded=False) -> dict:
    """The frame's features, ``memories`` frames of memories and ``pointers`` object-pointer tokens.

    ``expanded``: one frame's features for all objects, expanded along the batch (stride 0), as
    the engine hands a batch of objects; otherwise each object has features of its own.
    """
    gen = torch.Generator().manual_seed(seed)
    tokens = int(np.prod(config.memory_attention_rope_feat_sizes))
    hidden, mem_dim = config.memory_attention_hidden_size, config.memory_encoder_output_channels
    n = memories * tokens + pointers
    vision = torch.randn(tokens, 1 if expanded else objects, hidden, generator=gen)
    vision_pos = torch.randn(tokens, 1 if expanded else objects, hidden, generator=gen)
    if expanded:
        vision, vision_pos = vision.expand(-1, objects, -1), vision_pos.expand(-1, objects, -1)
    return dict(
        current_vision_features=vision,
        current_vision_position_embeddings=vision_pos,
        memory=torch.randn(n, objects, mem_dim, generator=gen),
        memory_posision_embeddings=torch.randn(n, objects, mem_dim, generator=gen),
        num_object_pointer_tokens=pointers,
    )
