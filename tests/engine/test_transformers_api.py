"""The private transformers API the engine drives: fail loudly when a release moves it.

Everything listed here is called from ``napari_sam2/engine/adapter.py`` and nowhere else;
pyproject.toml pins the tested transformers range and this test tells which name changed when
someone widens it. The adapter's own version of ``_single_frame_forward`` for a batch of objects
is checked against transformers' for a batch of one.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch
from transformers import Sam2VideoModel
from transformers.models.sam2_video import modeling_sam2_video
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoInferenceSession

from napari_sam2.engine.adapter import Sam2Adapter, adapter_for, builtin_adapters
from napari_sam2.engine.cache import FeatureCache

# method -> the keyword arguments the adapter passes (see adapter.py)
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
    # the steps of _prepare_memory_conditioned_features, taken one by one for a batch of objects
    "_gather_memory_frame_outputs": ["inference_session", "obj_idx", "frame_idx", "track_in_reverse_time"],
    "_build_memory_attention_inputs": ["temporal_positions_and_previous_outputs", "device"],
    "_get_object_pointers": ["inference_session", "obj_idx", "frame_idx", "num_total_frames", "device",
                             "track_in_reverse_time", "streaming"],
    "_process_object_pointers": ["temporal_offsets", "pointer_tokens", "max_object_pointers_to_use",
                                 "batch_size", "num_channels", "device"],
}
# submodules and attributes the adapter's batched decoder reads
MODULES = ("prompt_encoder", "mask_decoder", "object_pointer_proj", "no_object_pointer",
           "get_image_wide_positional_embeddings", "memory_attention")


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_private_methods_keep_their_signature(name):
    method = getattr(Sam2VideoModel, name, None)
    assert method is not None, (f"transformers.Sam2VideoModel.{name} is gone: "
                                "adapt napari_sam2/engine/adapter.py")
    params = list(inspect.signature(method).parameters)
    missing = [p for p in REQUIRED[name] if p not in params]
    assert not missing, (f"Sam2VideoModel.{name} lost parameters {missing}: "
                         "adapt napari_sam2/engine/adapter.py")


def test_rotary_function_the_fast_path_replaces_keeps_its_name_and_signature():
    """napari_sam2/engine/speed.py swaps this module-level function inside the RoPE attention."""
    from transformers.models.sam3_tracker_video import modeling_sam3_tracker_video

    for module, attention in [(modeling_sam2_video, "Sam2VideoRoPEAttention"),
                              (modeling_sam3_tracker_video, "Sam3TrackerVideoRoPEAttention")]:
        function = getattr(module, "apply_rotary_pos_emb_2d", None)
        assert function is not None, f"{module.__name__}.apply_rotary_pos_emb_2d is gone: adapt speed.py"
        assert list(inspect.signature(function).parameters) == [
            "q", "k", "cos", "sin", "num_k_exclude_rope", "repeat_freqs_k"]
        assert "apply_rotary_pos_emb_2d" in getattr(module, attention).forward.__code__.co_names


def test_the_names_the_module_patches_rely_on(tiny_model):
    """adapter.py's module patches (used by speed.py and shared_query.py) read these names."""
    from transformers.models.sam2.modeling_sam2 import Sam2HieraDetModel

    from napari_sam2.engine import adapter

    assert list(inspect.signature(Sam2HieraDetModel._get_pos_embed).parameters) == ["self", "hw"]
    network = getattr(tiny_model, "network", tiny_model)
    backbones = [m for m in network.modules() if isinstance(m, Sam2HieraDetModel)]
    assert backbones and all(adapter.hiera_position_embedding(m) is not None for m in backbones)
    assert adapter.attention_implementation(network.memory_attention) in ("sdpa", "eager")
    necks = [m for m in network.modules() if hasattr(m, "position_encoding")]
    assert necks, "no module holds a position_encoding any more: adapt speed.cache_position_encodings"


def test_only_the_adapter_patches_transformers_objects():
    """No other engine module sets an attribute on a network module or reads the private names."""
    import re
    from pathlib import Path

    import napari_sam2

    patterns = re.compile(r"\.forward\s*=[^=]|del \S+\.forward|\.__dict__|\._get_pos_embed|"
                          r"\._attn_implementation|\._compiled_call_impl|\.position_encoding\s*=[^=]")
    root = Path(napari_sam2.__file__).parent / "engine"
    found = [f"{path.relative_to(root)}:{n}: {line.strip()}"
             for path in sorted(root.rglob("*.py")) if path.name != "adapter.py"
             for n, line in enumerate(path.read_text().splitlines(), 1) if patterns.search(line)]
    assert not found, "\n".join(found)


def test_inference_session_layout(tiny_model):
    state = Sam2VideoInferenceSession(video_height=8, video_width=8)
    idx = state.obj_id_to_idx(5)
    assert idx == 0
    for attr in ("point_inputs_per_obj", "mask_inputs_per_obj", "output_dict_per_obj",
                 "frames_tracked_per_obj", "processed_frames", "cache", "dtype"):
        assert hasattr(state, attr), f"Sam2VideoInferenceSession.{attr} is gone"
    assert set(state.output_dict_per_obj[0]) == {"cond_frame_outputs", "non_cond_frame_outputs"}
    for attr in ("backbone_feature_sizes", "hidden_dim", "num_maskmem", *MODULES):
        assert hasattr(tiny_model, attr), f"Sam2VideoModel.{attr} is gone"
    assert hasattr(modeling_sam2_video, "NO_OBJ_SCORE")
    for attr in ("max_object_pointers_in_encoder", "image_size"):
        assert hasattr(tiny_model.config, attr)


def test_adapter_is_chosen_per_network_class(tiny_model):
    assert type(adapter_for(tiny_model)) is Sam2Adapter

    class Family(Sam2VideoModel):  # a family whose tracker subclasses SAM 2's
        pass

    class FamilyAdapter(Sam2Adapter):
        pass

    net = Family(tiny_model.config)
    assert type(adapter_for(net)) is Sam2Adapter  # inherits SAM 2's until it brings its own
    adapters = {**builtin_adapters(), Family: FamilyAdapter}
    assert type(adapter_for(net, adapters)) is FamilyAdapter
    assert type(adapter_for(tiny_model, adapters)) is Sam2Adapter
    assert type(adapter_for(net)) is Sam2Adapter  # nothing was registered anywhere
    with pytest.raises(TypeError, match="no adapter"):
        adapter_for(object())


def _features(tiny_model, seed=0):
    ad = Sam2Adapter(tiny_model)
    s = ad.image_size
    frames = [torch.from_numpy(np.random.default_rng(seed).standard_normal((3, s, s)).astype(np.float32))]
    state = ad.new_state(frames=frames, cache=FeatureCache(2), frame_shape=(s, s), device=tiny_model.device,
                         obj_id=1)
    return ad, state


@pytest.mark.parametrize("multimask", [True, False])
def test_batched_decoder_equals_single_frame_forward(tiny_model, multimask):
    ad, state = _features(tiny_model)
    with torch.inference_mode():
        feats, pos = ad.vision_features(state, 0)
        high_res = ad.high_res_features(feats)
        gen = torch.Generator().manual_seed(0)
        pix = torch.randn((3, ad.hidden_dim, *ad.feature_sizes[-1]), generator=gen)
        batched, iou_b = ad._decode_batch(pix, ad.high_res_features(feats, batch=3), multimask)
        for i in range(3):
            sam = tiny_model._single_frame_forward(
                pixel_values=None, input_points=None, input_labels=None, input_masks=None,
                image_embeddings=high_res + [pix[i:i + 1]], multimask_output=multimask)
            one, iou_1 = ad._decode_batch(pix[i:i + 1], high_res, multimask)
            for key, ref in (("pred_masks", sam.pred_masks), ("object_pointer", sam.object_pointer),
                             ("high_res_masks", sam.high_res_masks),
                             ("object_score_logits", sam.object_score_logits)):
                assert one[key].shape == ref.shape, key
                # a batch of one: exactly transformers' result
                torch.testing.assert_close(one[key], ref, rtol=0, atol=0, msg=key)
                # a batch of three: the same up to float rounding
                torch.testing.assert_close(batched[key][i:i + 1], ref, rtol=1e-4, atol=1e-4, msg=key)
            assert float(iou_1[0]) == float(sam.iou_scores.float().max())
            assert abs(float(iou_b[i]) - float(iou_1[0])) < 1e-5


def test_batched_memory_attention_equals_transformers(tiny_model, blobs_stack):
    from napari_sam2 import Sam2Session

    s = Sam2Session(tiny_model, blobs_stack, batch_objects=False)
    s.add_points(0, 1, [[40, 45]], [1])
    s.add_points(0, 2, [[20, 90]], [1])
    list(s.propagate("forward", stop=4))
    ad = s._tracker.adapter
    states = [s._objects[i].inference_state for i in (1, 2)]
    with torch.inference_mode():
        feats, pos = ad.vision_features(states[0], 4)
        refs = [tiny_model._prepare_memory_conditioned_features(
            inference_session=st, frame_idx=4, obj_idx=0, is_initial_conditioning_frame=False,
            current_vision_features=feats[-1], current_vision_positional_embeddings=pos[-1],
            num_total_frames=s.n_frames, track_in_reverse_time=False, streaming=False) for st in states]
        for st, ref in zip(states, refs):  # a batch of one, through the adapter's own steps
            one = ad._condition_batch(ad._merged_state([st], 4, False, s.n_frames), 4, feats[-1], pos[-1],
                                      s.n_frames, False)
            torch.testing.assert_close(one, ref, rtol=0, atol=0)
        assert ad.memory_signature(states[0], 4, False, s.n_frames) == \
            ad.memory_signature(states[1], 4, False, s.n_frames) == ((0,), (3, 2, 1))
        both = ad.condition_on_memory(states, 4, feats, pos, is_init=False, n_frames=s.n_frames,
                                      reverse=False)
        torch.testing.assert_close(both, torch.cat(refs), rtol=1e-5, atol=1e-5)
