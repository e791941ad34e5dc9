"""The private transformers methods the engine drives: fail loudly when a release moves them.

pyproject.toml pins the tested transformers range; this test tells which method changed when
someone widens it.
"""

from __future__ import annotations

import inspect

import pytest
from transformers import Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

REQUIRED = {
    "_prepare_vision_features": ["inference_session", "frame_idx", "batch_size"],
    "_prepare_memory_conditioned_features": [
        "inference_session", "frame_idx", "obj_idx", "is_initial_conditioning_frame",
        "current_vision_features", "current_vision_positional_embeddings", "num_total_frames",
        "track_in_reverse_time", "streaming",
    ],
    "_single_frame_forward": ["pixel_values", "input_points", "input_labels", "input_masks",
                              "image_embeddings", "multimask_output"],
    "_use_mask_as_output": ["backbone_features", "high_res_features", "mask_inputs"],
    "_use_multimask": ["is_init_cond_frame", "point_inputs"],
    "_encode_new_memory": ["current_vision_feats", "pred_masks_high_res", "object_score_logits",
                           "is_mask_from_pts"],
}


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_private_methods_keep_their_signature(name):
    method = getattr(Sam2VideoModel, name, None)
    assert method is not None, f"transformers.Sam2VideoModel.{name} is gone: adapt napari_sam2/engine/session.py"
    params = list(inspect.signature(method).parameters)
    missing = [p for p in REQUIRED[name] if p not in params]
    assert not missing, f"Sam2VideoModel.{name} lost parameters {missing}: adapt the engine"


def test_inference_session_layout(tiny_model):
    state = Sam2VideoInferenceSession(video_height=8, video_width=8)
    idx = state.obj_id_to_idx(5)
    assert idx == 0
    for attr in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj",
                 "frames_tracked_per_obj", "processed_frames", "cache"):
        assert hasattr(state, attr), f"Sam2VideoInferenceSession.{attr} is gone"
    assert set(state.output_dict_per_obj[0]) == {"cond_frame_outputs", "non_cond_frame_outputs"}
    for attr in ("backbone_feature_sizes", "hidden_dim", "num_maskmem"):
        assert hasattr(tiny_model, attr)
