"""Meta's SAM 2 ``.pt`` checkpoints: key renaming, config inference and loading.

facebookresearch/sam2 saves ``{"model": state_dict}`` with the module names of its own code
(``image_encoder.trunk.blocks.3.norm1.weight``); transformers' ``Sam2VideoModel`` names the same
tensors differently (``vision_encoder.backbone.blocks.3.layer_norm1.weight``). The tensors
themselves are identical (the fused Hiera ``qkv`` projection keeps Meta's layout) except for two:

* Meta keeps the four point embeddings as ``point_embeddings.{0..3}.weight`` of shape (1, C);
  transformers stacks them into one ``point_embed.weight`` of shape (4, C).
* transformers holds the random-Fourier positional matrix twice (the prompt encoder's and the
  image-wide ``shared_image_embedding``); Meta once.

The renaming is a table of templates (``{n}`` a number, ``{p}`` ``weight``/``bias``) read in both
directions, so the same table converts Meta -> transformers (loading) and back (tests, export).
Fine-tuned checkpoints in Meta's format (MedSAM2 and the like) load the same way as long as
they keep SAM 2's architecture; their input size is not stored in the weights, so pass
``image_size`` when it is not 1024 (MedSAM2: 512).
"""

from __future__ import annotations

import re
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from napari_sam2.errors import CheckpointError

__all__ = [
    "VARIANTS",
    "meta_to_hf_key",
    "hf_to_meta_key",
    "meta_to_hf_state_dict",
    "hf_to_meta_state_dict",
    "read_state_dict",
    "infer_config",
    "build_network",
    "summarise_keys",
    "tensor_problems",
]


# --------------------------------------------------------------------------- key renaming

def _mlp3(meta: str, hf: str) -> list[tuple[str, str]]:
    """Meta's 3-layer ``MLP.layers.{0,1,2}`` is transformers' ``proj_in / layers.0 / proj_out``."""
    return [
        (f"{meta}.layers.0.{{p}}", f"{hf}.proj_in.{{p}}"),
        (f"{meta}.layers.1.{{p}}", f"{hf}.layers.0.{{p}}"),
        (f"{meta}.layers.2.{{p}}", f"{hf}.proj_out.{{p}}"),
    ]


def _attention(meta: str, hf: str) -> list[tuple[str, str]]:
    rules = [(f"{meta}.{x}_proj.{{p}}", f"{hf}.{x}_proj.{{p}}") for x in "qkv"]
    return rules + [(f"{meta}.out_proj.{{p}}", f"{hf}.o_proj.{{p}}")]


def _rule_table() -> list[tuple[str, str]]:
    """(Meta template, transformers template) for every tensor of a SAM 2 video model."""
    trunk, backbone = "image_encoder.trunk", "vision_encoder.backbone"
    blk, hblk = f"{trunk}.blocks.{{n}}", f"{backbone}.blocks.{{n}}"
    dec, hdec = "sam_mask_decoder", "mask_decoder"
    layer, hlayer = f"{dec}.transformer.layers.{{n}}", f"{hdec}.transformer.layers.{{n}}"
    mem, hmem = "memory_attention.layers.{n}", "memory_attention.layers.{n}"
    fuse, hfuse = "memory_encoder.fuser.layers.{n}", "memory_encoder.memory_fuser.layers.{n}"
    rules = [
        # top-level parameters of SAM2Base
        ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
        ("no_mem_embed", "no_memory_embedding"),
        ("no_mem_pos_enc", "no_memory_positional_encoding"),
        ("no_obj_ptr", "no_object_pointer"),
        ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),  # SAM 2.1 only
        ("mask_downsample.{p}", "mask_downsample.{p}"),
        ("obj_ptr_tpos_proj.{p}", "temporal_positional_encoding_projection_layer.{p}"),  # 2.1
        *_mlp3("obj_ptr_proj", "object_pointer_proj"),
        # Hiera image encoder and FPN neck
        (f"{trunk}.pos_embed", f"{backbone}.pos_embed"),
        (f"{trunk}.pos_embed_window", f"{backbone}.pos_embed_window"),
        (f"{trunk}.patch_embed.proj.{{p}}", f"{backbone}.patch_embed.projection.{{p}}"),
        (f"{blk}.norm{{m}}.{{p}}", f"{hblk}.layer_norm{{m}}.{{p}}"),
        (f"{blk}.attn.qkv.{{p}}", f"{hblk}.attn.qkv.{{p}}"),
        (f"{blk}.attn.proj.{{p}}", f"{hblk}.attn.proj.{{p}}"),
        (f"{blk}.mlp.layers.0.{{p}}", f"{hblk}.mlp.proj_in.{{p}}"),
        (f"{blk}.mlp.layers.1.{{p}}", f"{hblk}.mlp.proj_out.{{p}}"),
        (f"{blk}.proj.{{p}}", f"{hblk}.proj.{{p}}"),  # channel change at a stage's first block
        ("image_encoder.neck.convs.{n}.conv.{p}", "vision_encoder.neck.convs.{n}.{p}"),
        # prompt encoder (point_embeddings.{i} are stacked separately, see module docstring)
        (
            "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
            "prompt_encoder.shared_embedding.positional_embedding",
        ),
        ("sam_prompt_encoder.not_a_point_embed.weight", "prompt_encoder.not_a_point_embed.weight"),
        ("sam_prompt_encoder.no_mask_embed.weight", "prompt_encoder.no_mask_embed.weight"),
        ("sam_prompt_encoder.mask_downscaling.0.{p}", "prompt_encoder.mask_embed.conv1.{p}"),
        ("sam_prompt_encoder.mask_downscaling.1.{p}", "prompt_encoder.mask_embed.layer_norm1.{p}"),
        ("sam_prompt_encoder.mask_downscaling.3.{p}", "prompt_encoder.mask_embed.conv2.{p}"),
        ("sam_prompt_encoder.mask_downscaling.4.{p}", "prompt_encoder.mask_embed.layer_norm2.{p}"),
        ("sam_prompt_encoder.mask_downscaling.6.{p}", "prompt_encoder.mask_embed.conv3.{p}"),
        # mask decoder: two-way transformer
        *_attention(f"{layer}.self_attn", f"{hlayer}.self_attn"),
        *_attention(f"{layer}.cross_attn_token_to_image", f"{hlayer}.cross_attn_token_to_image"),
        *_attention(f"{layer}.cross_attn_image_to_token", f"{hlayer}.cross_attn_image_to_token"),
        (f"{layer}.norm{{m}}.{{p}}", f"{hlayer}.layer_norm{{m}}.{{p}}"),
        (f"{layer}.mlp.layers.0.{{p}}", f"{hlayer}.mlp.proj_in.{{p}}"),
        (f"{layer}.mlp.layers.1.{{p}}", f"{hlayer}.mlp.proj_out.{{p}}"),
        *_attention(
            f"{dec}.transformer.final_attn_token_to_image",
            f"{hdec}.transformer.final_attn_token_to_image",
        ),
        (f"{dec}.transformer.norm_final_attn.{{p}}", f"{hdec}.transformer.layer_norm_final_attn.{{p}}"),
        # mask decoder: tokens, upscaling, heads
        (f"{dec}.iou_token.weight", f"{hdec}.iou_token.weight"),
        (f"{dec}.mask_tokens.weight", f"{hdec}.mask_tokens.weight"),
        (f"{dec}.obj_score_token.weight", f"{hdec}.obj_score_token.weight"),
        (f"{dec}.output_upscaling.0.{{p}}", f"{hdec}.upscale_conv1.{{p}}"),
        (f"{dec}.output_upscaling.1.{{p}}", f"{hdec}.upscale_layer_norm.{{p}}"),
        (f"{dec}.output_upscaling.3.{{p}}", f"{hdec}.upscale_conv2.{{p}}"),
        (f"{dec}.conv_s{{m}}.{{p}}", f"{hdec}.conv_s{{m}}.{{p}}"),
        *_mlp3(f"{dec}.output_hypernetworks_mlps.{{n}}", f"{hdec}.output_hypernetworks_mlps.{{n}}"),
        *_mlp3(f"{dec}.iou_prediction_head", f"{hdec}.iou_prediction_head"),
        *_mlp3(f"{dec}.pred_obj_score_head", f"{hdec}.pred_obj_score_head"),
        # memory attention
        *_attention(f"{mem}.self_attn", f"{hmem}.self_attn"),
        *_attention(f"{mem}.cross_attn_image", f"{hmem}.cross_attn_image"),
        (f"{mem}.linear{{m}}.{{p}}", f"{hmem}.linear{{m}}.{{p}}"),
        (f"{mem}.norm{{m}}.{{p}}", f"{hmem}.layer_norm{{m}}.{{p}}"),
        ("memory_attention.norm.{p}", "memory_attention.layer_norm.{p}"),
        # memory encoder: Meta's nn.Sequential (conv, norm, act) x 4 + final conv
        *[
            rule
            for k in range(4)
            for rule in (
                (
                    f"memory_encoder.mask_downsampler.encoder.{3 * k}.{{p}}",
                    f"memory_encoder.mask_downsampler.layers.{k}.conv.{{p}}",
                ),
                (
                    f"memory_encoder.mask_downsampler.encoder.{3 * k + 1}.{{p}}",
                    f"memory_encoder.mask_downsampler.layers.{k}.layer_norm.{{p}}",
                ),
            )
        ],
        ("memory_encoder.mask_downsampler.encoder.12.{p}", "memory_encoder.mask_downsampler.final_conv.{p}"),
        ("memory_encoder.pix_feat_proj.{p}", "memory_encoder.feature_projection.{p}"),
        (f"{fuse}.dwconv.{{p}}", f"{hfuse}.depthwise_conv.{{p}}"),
        (f"{fuse}.norm.{{p}}", f"{hfuse}.layer_norm.{{p}}"),
        (f"{fuse}.pwconv{{m}}.{{p}}", f"{hfuse}.pointwise_conv{{m}}.{{p}}"),
        (f"{fuse}.gamma", f"{hfuse}.scale"),
        ("memory_encoder.out_proj.{p}", "memory_encoder.projection.{p}"),
    ]
    return rules


_PLACEHOLDERS = {"n": r"(?P<n>\d+)", "m": r"(?P<m>\d+)", "p": r"(?P<p>weight|bias)"}


def _compile(template: str) -> re.Pattern:
    parts = re.split(r"\{(\w)\}", template)  # literal, name, literal, name, ...
    pattern = "".join(
        _PLACEHOLDERS[part] if i % 2 else re.escape(part) for i, part in enumerate(parts)
    )
    return re.compile(pattern)


@lru_cache(maxsize=1)
def _compiled_rules():
    rules = _rule_table()
    forward = [(_compile(meta), hf) for meta, hf in rules]
    backward = [(_compile(hf), meta) for meta, hf in rules]
    return forward, backward


def _rename(key: str, rules) -> str | None:
    for pattern, template in rules:
        match = pattern.fullmatch(key)
        if match:
            return template.format(**match.groupdict())
    return None


_META_POINT = re.compile(r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight")
_HF_POINT = "prompt_encoder.point_embed.weight"
_HF_SHARED = "shared_image_embedding.positional_embedding"
_HF_PROMPT_PE = "prompt_encoder.shared_embedding.positional_embedding"


def meta_to_hf_key(key: str) -> str | None:
    """Transformers' name for one of Meta's tensor names, or None when there is no rule.

    The point embeddings (stacked into one tensor) return None; use
    :func:`meta_to_hf_state_dict` for whole state dicts.
    """
    return _rename(key, _compiled_rules()[0])


def hf_to_meta_key(key: str) -> str | None:
    """Meta's name for one of transformers' tensor names, or None when there is no rule."""
    return _rename(key, _compiled_rules()[1])


def meta_to_hf_state_dict(state_dict: dict) -> tuple[dict, list[str]]:
    """Rename a Meta state dict to transformers' names.

    Returns
    -------
    converted : dict
        Transformers-named tensors (the same tensor objects, except the stacked point
        embeddings).
    unmapped : list of str
        Meta keys no rule knows (reported to the user as unexpected keys).
    """
    import torch

    converted, unmapped, points = {}, [], {}
    for key, value in state_dict.items():
        point = _META_POINT.fullmatch(key)
        if point:
            points[int(point.group(1))] = value
            continue
        new = meta_to_hf_key(key)
        if new is None:
            unmapped.append(key)
        else:
            converted[new] = value
    if points:
        if sorted(points) == list(range(len(points))):
            converted[_HF_POINT] = torch.cat([points[i] for i in range(len(points))], dim=0)
        else:  # a gap: leave the key missing so the caller reports it
            unmapped.extend(f"sam_prompt_encoder.point_embeddings.{i}.weight" for i in sorted(points))
    if _HF_PROMPT_PE in converted:
        # transformers keeps a second copy for the image-wide positional encoding
        converted[_HF_SHARED] = converted[_HF_PROMPT_PE]
    return converted, unmapped


def hf_to_meta_state_dict(state_dict: dict) -> dict:
    """Rename a transformers ``Sam2VideoModel`` state dict to Meta's names (inverse of the above).

    Raises
    ------
    KeyError
        For a key no rule knows.
    """
    converted = {}
    for key, value in state_dict.items():
        if key == _HF_SHARED:
            continue  # duplicate of the prompt encoder's matrix
        if key == _HF_POINT:
            for i in range(value.shape[0]):
                converted[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = value[i : i + 1].clone()
            continue
        new = hf_to_meta_key(key)
        if new is None:
            raise KeyError(f"no Meta name for transformers key {key!r}")
        converted[new] = value
    return converted


# --------------------------------------------------------------------------- reading files

def _is_tensor_dict(obj) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def read_state_dict(path: str | Path) -> dict:
    """Read the tensors of a ``.pt``/``.pth`` checkpoint or a ``.safetensors`` file.

    ``.pt`` files are read with ``weights_only=True``: nothing in them is executed. The state
    dict may be the whole file or sit under ``"model"`` (Meta's format), ``"state_dict"`` or
    ``"model_state_dict"``; a ``module.`` prefix (saved from DistributedDataParallel) is dropped.

    Raises
    ------
    CheckpointError
        With what is wrong with the file.
    """
    import pickle

    import torch

    path = Path(path)
    obj: Any  # torch.load returns whatever was pickled; it is checked below
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types for corrupt headers
            raise CheckpointError(f"{path} is not a readable safetensors file ({err}).") from err
    else:
        try:
            with warnings.catch_warnings():
                # a damaged file's first bytes can read as an unknown pickle protocol: torch warns,
                # then fails; the error below says it plainly
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            found = re.search(r"GLOBAL (\S+)", str(err))
            if found is None:  # not a pickle torch can parse at all
                raise CheckpointError(
                    f"{path} could not be read as a PyTorch checkpoint; it is damaged or not a "
                    "checkpoint at all (re-download or re-export it)."
                ) from err
            raise CheckpointError(
                f"{path} holds Python objects besides tensors (e.g. {found.group(1)}), which are "
                "not loaded for safety: unpickling them could run code from the file. If you trust "
                "the file, re-save only the weights: ckpt = torch.load(path, weights_only=False); "
                "torch.save({'model': ckpt['model']}, 'weights.pt'), and load that."
            ) from err
        except Exception as err:  # corrupt zip, truncated file, not a torch file at all
            raise CheckpointError(
                f"{path} could not be read as a PyTorch checkpoint; it is damaged or not a "
                f"checkpoint at all (re-download or re-export it). torch said: {err}"
            ) from err

    state_dict: dict[str, Any] | None = None
    if _is_tensor_dict(obj):
        state_dict = obj
    elif isinstance(obj, dict):
        for key in ("model", "state_dict", "model_state_dict"):
            if _is_tensor_dict(obj.get(key)):
                state_dict = obj[key]
                break
    if state_dict is None:
        held = sorted(obj)[:10] if isinstance(obj, dict) else type(obj).__name__
        raise CheckpointError(
            f"{path} does not contain a model state dict: expected a dict of tensors, possibly "
            f"under 'model' as in Meta's SAM 2 checkpoints; found {held}."
        )
    if all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return dict(state_dict)


# --------------------------------------------------------------------------- configs

#: Hiera layouts of the four released sizes (transformers' conversion settings). The number of
#: heads, the windows and the global-attention blocks leave no trace in tensor shapes, so a
#: checkpoint is matched to one of these by its width and depth.
VARIANTS: dict[str, dict[str, Any]] = {
    "tiny": dict(
        hidden_size=96, blocks_per_stage=[1, 2, 7, 2], num_attention_heads_per_stage=[1, 2, 4, 8],
        global_attention_blocks=[5, 7, 9], window_size_per_stage=[8, 4, 14, 7],
        window_positional_embedding_background_size=[7, 7],
    ),
    "small": dict(
        hidden_size=96, blocks_per_stage=[1, 2, 11, 2], num_attention_heads_per_stage=[1, 2, 4, 8],
        global_attention_blocks=[7, 10, 13], window_size_per_stage=[8, 4, 14, 7],
        window_positional_embedding_background_size=[7, 7],
    ),
    "base-plus": dict(
        hidden_size=112, blocks_per_stage=[2, 3, 16, 3], num_attention_heads_per_stage=[2, 4, 8, 16],
        global_attention_blocks=[12, 16, 20], window_size_per_stage=[8, 4, 14, 7],
        window_positional_embedding_background_size=[14, 14],
    ),
    "large": dict(
        hidden_size=144, blocks_per_stage=[2, 6, 36, 4], num_attention_heads_per_stage=[2, 4, 8, 16],
        global_attention_blocks=[23, 33, 43], window_size_per_stage=[8, 4, 16, 8],
        window_positional_embedding_background_size=[7, 7],
    ),
}


def variant_config(variant: str, *, sam21: bool = True, image_size: int = 1024):
    """The ``Sam2VideoConfig`` of a released size (``"tiny"``, ..., ``"large"``) at ``image_size``."""
    from transformers import Sam2HieraDetConfig, Sam2VideoConfig, Sam2VisionConfig

    if image_size % 64:
        raise CheckpointError(f"image_size must be a multiple of 64, got {image_size}")
    layout = dict(VARIANTS[variant])
    width = layout["hidden_size"]
    dims = [width, 2 * width, 4 * width, 8 * width]
    backbone = Sam2HieraDetConfig(embed_dim_per_stage=dims, image_size=[image_size, image_size], **layout)
    s4, s8, s16 = image_size // 4, image_size // 8, image_size // 16
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=dims[::-1],
        backbone_feature_sizes=[[s4, s4], [s8, s8], [s16, s16]],
    )
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={"image_size": image_size},
        image_size=image_size,
        memory_attention_rope_feat_sizes=[s16, s16],
        # SAM 2.1 added the signed temporal encoding of object pointers and the occlusion
        # embedding; SAM 2.0 checkpoints have neither tensor
        enable_temporal_pos_encoding_for_object_pointers=sam21,
        enable_occlusion_spatial_embedding=sam21,
    )


def _count(state_dict: dict, prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for k in state_dict if (m := pattern.match(k))}
    return max(indices) + 1 if indices else 0


def infer_config(state_dict: dict, image_size: int = 1024):
    """Work out the config of a transformers-named SAM 2 state dict from its tensor shapes.

    Returns
    -------
    config : transformers.Sam2VideoConfig
    description : str
        E.g. ``"sam2.1-tiny"`` or ``"sam2-large"`` (SAM 2.0).

    Raises
    ------
    CheckpointError
        When the image encoder matches none of the released sizes (pass ``config=``).
    """
    pos = state_dict.get("vision_encoder.backbone.pos_embed")
    n_blocks = _count(state_dict, "vision_encoder.backbone.blocks.")
    if pos is None or pos.ndim != 4 or not n_blocks:
        raise CheckpointError("no Hiera image encoder (image_encoder.trunk.*) in the checkpoint")
    width = int(pos.shape[1])
    # a block whose channels change (it has a skip projection) starts a new stage
    starts = [i for i in range(n_blocks) if f"vision_encoder.backbone.blocks.{i}.proj.weight" in state_dict]
    bounds = [0, *starts, n_blocks]
    blocks = [b - a for a, b in zip(bounds[:-1], bounds[1:])]
    variant = next(
        (
            name
            for name, layout in VARIANTS.items()
            if layout["hidden_size"] == width
            and layout["blocks_per_stage"] == blocks
            and list(pos.shape[2:]) == layout["window_positional_embedding_background_size"]
        ),
        None,
    )
    if variant is None:
        raise CheckpointError(
            f"the image encoder (width {width}, blocks per stage {blocks}) matches none of the "
            f"released SAM 2 sizes ({', '.join(VARIANTS)}); pass its transformers config "
            "explicitly: load_model(path, config=Sam2VideoConfig(...))"
        )
    sam21 = "occlusion_spatial_embedding_parameter" in state_dict
    tpos = "temporal_positional_encoding_projection_layer.weight" in state_dict
    if sam21 != tpos:
        raise CheckpointError(
            "the checkpoint mixes SAM 2.0 and 2.1 parts (it has only one of no_obj_embed_spatial "
            "and obj_ptr_tpos_proj); pass its transformers config explicitly with config="
        )
    config = variant_config(variant, sam21=sam21, image_size=image_size)
    memory_layers = _count(state_dict, "memory_attention.layers.")
    if memory_layers:
        config.memory_attention_num_layers = memory_layers
    maskmem = state_dict.get("memory_temporal_positional_encoding")
    if maskmem is not None:
        config.num_maskmem = int(maskmem.shape[0])
    return config, f"sam2{'.1' if sam21 else ''}-{variant}"


# --------------------------------------------------------------------------- building

def tensor_problems(expected: dict, converted: dict, unmapped) -> str:
    """What keeps converted tensors from loading into a network's state dict ("" when nothing).

    Names the missing, unexpected (``unmapped`` too) and mis-shaped tensors, a few of each.
    """
    missing = set(expected) - set(converted)
    unexpected = set(unmapped) | (set(converted) - set(expected))
    mismatched = [f"{k} {tuple(converted[k].shape)} (model wants {tuple(expected[k].shape)})"
                  for k in set(expected) & set(converted)
                  if tuple(converted[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing: {summarise_keys(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected: {summarise_keys(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} with other shapes: {summarise_keys(mismatched, 4)}")
    return "; ".join(problems)


def summarise_keys(keys, limit: int = 8) -> str:
    """The first ``limit`` of some tensor names, sorted, and how many more (for messages)."""
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def build_network(state_dict: dict, config=None, image_size: int | None = None) -> tuple[Any, str]:
    """Build a ``Sam2VideoModel`` holding exactly the tensors of a Meta- or transformers-named dict.

    Parameters
    ----------
    state_dict : dict
        Meta's names (``image_encoder.*``) or transformers' (``vision_encoder.*``).
    config : transformers.Sam2VideoConfig or dict, optional
        Overrides the config inferred from the tensor shapes.
    image_size : int, optional
        Model input size for an inferred config (default 1024; MedSAM2 uses 512).

    Returns
    -------
    network : transformers.Sam2VideoModel
        On the CPU, in eval mode, float32.
    description : str
        The inferred variant (``"sam2.1-tiny"``) or ``"custom config"``.

    Raises
    ------
    CheckpointError
        When the tensors are not SAM 2's, or any tensor is missing, unexpected or mis-shaped.
    """
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel
    from transformers.initialization import no_init_weights

    keys = list(state_dict)
    if any(k.startswith("image_encoder.") for k in keys):
        converted, unmapped = meta_to_hf_state_dict(state_dict)
    elif any(k.startswith("vision_encoder.") for k in keys):
        converted, unmapped = dict(state_dict), []
    else:
        raise CheckpointError(
            "this is not a SAM 2 checkpoint: it has no image encoder weights "
            f"(image_encoder.* or vision_encoder.*); its first keys are {summarise_keys(keys, 5)}"
        )
    if not any(k.startswith("memory_attention.") for k in converted):
        raise CheckpointError(
            "this checkpoint has no memory attention weights: it is not a SAM 2 video model "
            "(SAM 1, or an image-only export?), so it cannot track objects through a stack"
        )

    if config is None:
        config, description = infer_config(converted, image_size=image_size or 1024)
    else:
        if isinstance(config, dict):
            config = Sam2VideoConfig(**config)
        if not isinstance(config, Sam2VideoConfig):
            raise CheckpointError(
                f"config must be a transformers Sam2VideoConfig or a dict, got {type(config).__name__}"
            )
        # SAM 2's image_size is an int; transformers types the attribute for every vision config
        if image_size is not None and int(config.image_size) != int(image_size):  # type: ignore[arg-type]
            raise CheckpointError(
                f"image_size={image_size} contradicts config.image_size={config.image_size}; "
                "pass only one of them"
            )
        description = "custom config"

    # random initialisation of a large model takes seconds and every tensor is overwritten
    with no_init_weights():
        network = Sam2VideoModel(config)
    problems = tensor_problems(network.state_dict(), converted, unmapped)
    if problems:
        raise CheckpointError(
            f"the checkpoint's tensors do not fit a SAM 2 {description} model ({problems}). "
            "If it is a modified architecture, pass its transformers config with config=."
        )
    # assign=True adopts the loaded tensors instead of copying them into fresh memory (a
    # second full copy of the weights, and most of the loading time)
    network.load_state_dict(
        {k: v.contiguous() for k, v in converted.items()}, strict=True, assign=True
    )
    if any(p.dtype != torch.float32 for p in network.parameters()):
        network = network.float()  # half-precision checkpoints; autocast handles precision
    return network.eval(), description
