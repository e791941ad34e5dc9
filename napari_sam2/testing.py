"""Small random-initialised SAM 2, SAM 3 tracker and EdgeTAM models for tests and benchmarks.

Nothing here downloads anything: the models are built from a config and random weights, so the
whole pipeline (preprocessing, memory bank, propagation, export) can run on a laptop CPU or in CI
in well under a second per frame. Their masks are meaningless, their shapes and code paths are
the real ones.

The EdgeTAM config keeps EdgeTAM's tracker (spatial perceiver, its memory attention and memory
layout) on a small Hiera image encoder, because the released RepViT encoder is built by timm,
which transformers only uses when torchvision imports (see docs/python-api.md, "Model families").
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["FAMILIES", "tiny_config", "tiny_sam3_config", "tiny_edgetam_config", "make_tiny_model",
           "save_tiny_model"]

#: Families :func:`make_tiny_model` builds.
FAMILIES = ("sam2", "sam3", "edgetam")


def tiny_config(image_size: int = 256):
    """A SAM 2.1 video config small enough to run a frame in ~0.06 s on 2 CPU threads.

    Parameters
    ----------
    image_size : int
        Model input size in pixels (a multiple of 64). 256 keeps tests fast; 1024 gives the
        geometry of the released checkpoints.

    Returns
    -------
    transformers.Sam2VideoConfig
    """
    from transformers import Sam2VideoConfig

    return Sam2VideoConfig(**_tiny_tracker(image_size))


def _tiny_tracker(image_size: int) -> dict:
    """The settings SAM 2's small test trackers share: small encoder, one memory-attention layer."""
    s16 = image_size // 16
    return dict(
        vision_config=_tiny_hiera(image_size),
        prompt_encoder_config={"image_size": image_size, "hidden_size": 256, "patch_size": 16},
        mask_decoder_config={"hidden_size": 256},
        image_size=image_size,
        memory_attention_num_layers=1,
        memory_attention_rope_feat_sizes=[s16, s16],
        # memory channels must stay 64: the released configs and the memory encoder assume it
        memory_encoder_output_channels=64,
    )


def _tiny_hiera(image_size: int) -> dict:
    """The vision config of a small Hiera image encoder (SAM 2's, also used for tiny EdgeTAM)."""
    if image_size % 64:
        raise ValueError(f"image_size must be a multiple of 64, got {image_size}")
    s4, s8, s16 = image_size // 4, image_size // 8, image_size // 16
    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": 32,
        "num_attention_heads": 1,
        "image_size": [image_size, image_size],
        "blocks_per_stage": [1, 2, 2, 1],
        "embed_dim_per_stage": [32, 64, 128, 256],
        "num_attention_heads_per_stage": [1, 2, 4, 8],
        "window_size_per_stage": [4, 4, 4, 4],
        # a global block at a stage's first (pooling) block breaks the window code
        "global_attention_blocks": [4],
        "window_positional_embedding_background_size": [2, 2],
    }
    return {
        "model_type": "sam2_vision_model",
        "backbone_config": backbone,
        "backbone_channel_list": [256, 128, 64, 32],
        "backbone_feature_sizes": [[s4, s4], [s8, s8], [s16, s16]],
        "fpn_hidden_size": 256,
    }


def tiny_sam3_config(image_size: int = 224):
    """A SAM 3 tracker video config with a 4-layer, 64-wide ViT image encoder.

    Parameters
    ----------
    image_size : int
        Model input size in pixels, a multiple of 14 (the ViT patch; 1008 for the released
        model). 224 gives 16 x 16 image features, as the tiny SAM 2 config at 256 px.

    Returns
    -------
    transformers.Sam3TrackerVideoConfig
    """
    from transformers import Sam3TrackerVideoConfig

    if image_size % 14 or (image_size // 14) % 4:
        raise ValueError("image_size must be a multiple of 56 (14-pixel patches, 4x4 windows), "
                         f"got {image_size}")
    backbone = {
        "model_type": "sam3_vit_model",
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 2,
        "window_size": 4,
        "global_attn_indexes": [3],
        "image_size": image_size,
        "patch_size": 14,
        "pretrain_image_size": 56,
    }
    return Sam3TrackerVideoConfig(  # type: ignore[call-arg]  # its **kwargs take image_size
        vision_config={"backbone_config": backbone},
        image_size=image_size,
        memory_attention_num_layers=1,
    )


def tiny_edgetam_config(image_size: int = 256):
    """An EdgeTAM video config on a small Hiera image encoder.

    EdgeTAM's tracker (spatial perceiver, 2-D RoPE memory attention) as released.

    Parameters
    ----------
    image_size : int
        Model input size in pixels, a multiple of 64 (1024 for the released model).

    Returns
    -------
    transformers.EdgeTamVideoConfig
    """
    from transformers import EdgeTamVideoConfig

    s16 = image_size // 16
    # the perceiver's 2-D latents tile the memory features in square windows
    side = s16 // 2
    return EdgeTamVideoConfig(
        **_tiny_tracker(image_size),
        memory_attention_rope_k_sizes=[side, side],
        perceiver_resampler_num_latents=side * side,
        perceiver_resampler_num_latents_2d=side * side,
        perceiver_resampler_num_layers=1,
    )


def make_tiny_model(image_size: int | None = None, seed: int = 0, object_bias: float = 3.0,
                    family: str = "sam2"):
    """Build a random-initialised tiny video model in eval mode.

    Parameters
    ----------
    image_size : int, optional
        Model input size in pixels (default 256; 224 for SAM 3).
    seed : int
        Seed for the random weights, so two calls give the same network.
    object_bias : float
        Added to the object-score logit. A random network scores every object near 0, i.e.
        "absent" half of the time, which empties the masks; a positive bias makes it "see"
        objects so that masks, memories and comparisons are not trivially empty.
    family : {"sam2", "sam3", "edgetam"}
        ``Sam2VideoModel``, ``Sam3TrackerVideoModel`` or ``EdgeTamVideoModel``.
    """
    import torch
    import transformers

    builders = {
        "sam2": (tiny_config, 256, "Sam2VideoModel"),
        "sam3": (tiny_sam3_config, 224, "Sam3TrackerVideoModel"),
        "edgetam": (tiny_edgetam_config, 256, "EdgeTamVideoModel"),
    }
    if family not in builders:
        raise ValueError(f"unknown family {family!r}: use one of {', '.join(builders)}")
    make_config, default_size, cls = builders[family]
    torch.manual_seed(seed)
    model = getattr(transformers, cls)(make_config(image_size or default_size))
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias += object_bias
    return model.eval()


def save_tiny_model(folder: str | Path, image_size: int | None = None, seed: int = 0,
                    object_bias: float = 3.0, family: str = "sam2") -> Path:
    """Save a random tiny model as a transformers folder (config.json + safetensors).

    Returns
    -------
    pathlib.Path
        The folder, ready for :func:`napari_sam2.load_model`.
    """
    folder = Path(folder)
    make_tiny_model(image_size, seed, object_bias, family).save_pretrained(folder)
    return folder
