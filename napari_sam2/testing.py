"""Small random-initialised SAM 2 models for tests, examples and benchmarks.

Nothing here downloads anything: the models are built from a config and random weights, so the
whole pipeline (preprocessing, memory bank, propagation, export) can run on a laptop CPU or in CI
in well under a second per frame. Their masks are meaningless, their shapes and code paths are
the real ones.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["tiny_config", "make_tiny_model", "save_tiny_model"]


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
    vision = {
        "backbone_config": backbone,
        "backbone_channel_list": [256, 128, 64, 32],
        "backbone_feature_sizes": [[s4, s4], [s8, s8], [s16, s16]],
        "fpn_hidden_size": 256,
    }
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={"image_size": image_size, "hidden_size": 256, "patch_size": 16},
        mask_decoder_config={"hidden_size": 256},
        image_size=image_size,
        memory_attention_num_layers=1,
        memory_attention_rope_feat_sizes=[s16, s16],
        # memory channels must stay 64: the released configs and the memory encoder assume it
        memory_encoder_output_channels=64,
    )


def make_tiny_model(image_size: int = 256, seed: int = 0, object_bias: float = 3.0):
    """Build a random-initialised tiny ``Sam2VideoModel`` in eval mode.

    Parameters
    ----------
    image_size : int
        Model input size in pixels.
    seed : int
        Seed for the random weights, so two calls give the same network.
    object_bias : float
        Added to the object-score logit. A random network scores every object near 0, i.e.
        "absent" half of the time, which empties the masks; a positive bias makes it "see"
        objects so that masks, memories and comparisons are not trivially empty.
    """
    import torch
    from transformers import Sam2VideoModel

    torch.manual_seed(seed)
    model = Sam2VideoModel(tiny_config(image_size))
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias += object_bias
    return model.eval()


def save_tiny_model(folder: str | Path, image_size: int = 256, seed: int = 0,
                    object_bias: float = 3.0) -> Path:
    """Save a random tiny model as a transformers folder (config.json + safetensors).

    Returns
    -------
    pathlib.Path
        The folder, ready for :func:`napari_sam2.load_model`.
    """
    folder = Path(folder)
    make_tiny_model(image_size, seed, object_bias).save_pretrained(folder)
    return folder
