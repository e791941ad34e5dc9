"""Meta's EdgeTAM ``.pt`` checkpoint (``edgetam.pt``): its config, key renaming and loading.

facebookresearch/EdgeTAM saves ``{"model": state_dict}`` with the module names of its own code,
a fork of SAM 2's. Most tensors are SAM 2's and are renamed by SAM 2's table
(:mod:`napari_sam2.engine.checkpoints`); three parts are EdgeTAM's own:

* the image encoder is timm's RepViT, kept whole: Meta's ``image_encoder.trunk.body.*`` is
  transformers' ``vision_encoder.backbone.timm_model.*`` (timm's own names below that);
* the spatial perceiver that compresses each memory (``spatial_perceiver.*``): its attentions
  store keys and values as one ``to_kv`` matrix, which transformers keeps as ``k_proj`` and
  ``v_proj`` (the first and second half of its rows);
* the memory attention's feed-forward layers are ``linear1`` / ``linear2`` in Meta's code and
  ``mlp.up_proj`` / ``mlp.down_proj`` in transformers' EdgeTAM.

The architecture is fixed (one released size), so the config is the released one
(:func:`edgetam_config`), not inferred from the shapes.
"""

from __future__ import annotations

import re
from typing import Any

from napari_sam2.errors import CheckpointError

__all__ = ["is_edgetam_checkpoint", "edgetam_config", "edgetam_meta_to_hf", "build_edgetam_network"]

_SPATIAL = "spatial_perceiver"

#: (Meta pattern, transformers template) for the spatial perceiver's tensors; ``\1`` the layer,
#: ``\2`` weight/bias. The ``to_kv`` matrices are split separately (see the module docstring).
_PERCEIVER_RULES = [
    (r"latents", "latents_1d"),
    (r"latents_2d", "latents_2d"),
    (r"norm\.(weight|bias)", r"layer_norm.\1"),
    (r"layers\.(\d+)\.attn\.norm_x\.(weight|bias)", r"layers.\1.layer_norm_input.\2"),
    (r"layers\.(\d+)\.attn\.norm_latents\.(weight|bias)", r"layers.\1.layer_norm_latents.\2"),
    (r"layers\.(\d+)\.attn\.to_q\.weight", r"layers.\1.cross_attention.q_proj.weight"),
    (r"layers\.(\d+)\.attn\.to_out\.weight", r"layers.\1.cross_attention.o_proj.weight"),
    (r"layers\.(\d+)\.self_attn\.norm\.(weight|bias)", r"layers.\1.layer_norm_self.\2"),
    (r"layers\.(\d+)\.self_attn\.to_q\.weight", r"layers.\1.self_attention.q_proj.weight"),
    (r"layers\.(\d+)\.self_attn\.to_out\.weight", r"layers.\1.self_attention.o_proj.weight"),
    (r"layers\.(\d+)\.ff\.0\.(weight|bias)", r"layers.\1.mlp.layer_norm.\2"),
    (r"layers\.(\d+)\.ff\.1\.weight", r"layers.\1.mlp.up_proj.weight"),
    (r"layers\.(\d+)\.ff\.3\.weight", r"layers.\1.mlp.down_proj.weight"),
    (r"layers\.(\d+)\.self_ff\.0\.(weight|bias)", r"layers.\1.self_mlp.layer_norm.\2"),
    (r"layers\.(\d+)\.self_ff\.1\.weight", r"layers.\1.self_mlp.up_proj.weight"),
    (r"layers\.(\d+)\.self_ff\.3\.weight", r"layers.\1.self_mlp.down_proj.weight"),
]
_KV = re.compile(r"layers\.(\d+)\.(attn|self_attn)\.to_kv\.weight")
_KV_NAMES = {"attn": "cross_attention", "self_attn": "self_attention"}
_MEMORY_MLP = re.compile(r"(memory_attention\.layers\.\d+)\.linear([12])\.(weight|bias)")
_TRUNK, _TIMM = "image_encoder.trunk.body.", "vision_encoder.backbone.timm_model."


def is_edgetam_checkpoint(state_dict: dict) -> bool:
    """Whether a Meta-named state dict is EdgeTAM's (it has a spatial perceiver)."""
    return any(k.startswith(_SPATIAL + ".") for k in state_dict)


def edgetam_config(**settings):
    """EdgeTAM's ``EdgeTamVideoConfig`` as released (RepViT image encoder, 1024 px).

    transformers' own default vision config misspells the encoder's "architecture" key and so
    builds a resnet50, whose channels do not fit EdgeTAM's neck: this names
    ``repvit_m1.dist_in1k`` as the released config.json does (no pretrained weights are
    fetched). ``settings``: other ``EdgeTamVideoConfig`` arguments.
    """
    from transformers import EdgeTamVideoConfig, TimmWrapperConfig

    features = {"in_chans": 3, "features_only": True, "out_indices": [0, 1, 2, 3]}
    backbone = TimmWrapperConfig(architecture="repvit_m1.dist_in1k", model_args=features)
    vision = {"model_type": "edgetam_vision_model", "backbone_config": backbone.to_dict()}
    return EdgeTamVideoConfig(vision_config=vision, **settings)


def edgetam_meta_to_hf(state_dict: dict) -> tuple[dict, list[str]]:
    """Rename Meta's EdgeTAM tensors to transformers' names; returns ``(converted, unmapped)``.

    ``unmapped``: Meta keys no rule knows (reported as unexpected).
    """
    from napari_sam2.engine.checkpoints import meta_to_hf_state_dict

    converted: dict = {}
    unmapped: list[str] = []
    rest = {}
    for key, value in state_dict.items():
        if key.startswith(_TRUNK):
            converted[_TIMM + key[len(_TRUNK):]] = value
        elif key.startswith(_SPATIAL + "."):
            name = key[len(_SPATIAL) + 1:]
            kv = _KV.fullmatch(name)
            if kv:  # keys then values, stacked along the output rows
                k, v = value.chunk(2, dim=0)
                where = f"{_SPATIAL}.layers.{kv.group(1)}.{_KV_NAMES[kv.group(2)]}"
                converted[f"{where}.k_proj.weight"], converted[f"{where}.v_proj.weight"] = k, v
                continue
            for pattern, template in _PERCEIVER_RULES:
                if re.fullmatch(pattern, name):
                    converted[f"{_SPATIAL}.{re.sub(pattern, template, name)}"] = value
                    break
            else:
                unmapped.append(key)
        else:
            rest[key] = value
    sam2, more = meta_to_hf_state_dict(rest)
    for key, value in sam2.items():
        mlp = _MEMORY_MLP.fullmatch(key)
        if mlp:
            key = f"{mlp.group(1)}.mlp.{'up' if mlp.group(2) == '1' else 'down'}_proj.{mlp.group(3)}"
        converted[key] = value
    return converted, unmapped + more


def build_edgetam_network(state_dict: dict) -> tuple[Any, str]:
    """An ``EdgeTamVideoModel`` holding exactly the tensors of Meta's ``edgetam.pt``.

    Raises
    ------
    CheckpointError
        When a tensor is missing, unexpected or mis-shaped.
    """
    import torch
    from transformers import EdgeTamVideoModel
    from transformers.initialization import no_init_weights

    from napari_sam2.engine.checkpoints import tensor_problems

    converted, unmapped = edgetam_meta_to_hf(state_dict)
    # the released EdgeTAM has neither SAM 2.1 addition (no tensors for them in edgetam.pt)
    pointer_time = "temporal_positional_encoding_projection_layer.weight" in converted
    occlusion = "occlusion_spatial_embedding_parameter" in converted
    config = edgetam_config(enable_temporal_pos_encoding_for_object_pointers=pointer_time,
                            enable_occlusion_spatial_embedding=occlusion)
    with no_init_weights():
        network = EdgeTamVideoModel(config)
    problems = tensor_problems(network.state_dict(), converted, unmapped)
    if problems:
        raise CheckpointError(f"the checkpoint's tensors do not fit the released EdgeTAM ({problems})")
    network.load_state_dict({k: v.contiguous() for k, v in converted.items()}, strict=True, assign=True)
    if any(p.dtype != torch.float32 for p in network.parameters()):
        network = network.float()
    return network.eval(), "edgetam"
