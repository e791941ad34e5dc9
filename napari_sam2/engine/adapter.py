"""The one place that calls into transformers' private SAM 2 video API.

The session needs the steps of SAM 2's tracker one at a time (image features, memory
attention, mask decoder, memory encoder), which transformers implements as private methods of
``Sam2VideoModel`` and as attributes of ``Sam2VideoInferenceSession``. Every such call, and
every attribute read or set on those objects, is here, with keyword arguments, so that a
transformers release that moves them is adapted in this file alone;
``tests/engine/test_transformers_api.py`` checks the same names and signatures and fails loudly
when one changes.

:class:`Sam2Adapter` drives SAM 2 / 2.1 (``Sam2VideoModel``). A model family whose tracker
differs (another memory-encoder or memory-attention signature) subclasses it and overrides the
steps that differ; :func:`adapter_for` picks the adapter for a network from a mapping of network
classes to adapters (:func:`builtin_adapters`). :class:`Sam3TrackerAdapter` (SAM 3's
tracker: SAM 2's steps, its own session class) and :class:`EdgeTamAdapter` (memories compressed
by a perceiver that takes one object at a time) are the built-in variants.

Batches: :meth:`Sam2Adapter.condition_on_memory`, :meth:`Sam2Adapter.decode` and
:meth:`Sam2Adapter.encode_memory` take several objects at once (the batch dimension) when
their memories are read from the same frames (:meth:`Sam2Adapter.memory_signature`).

Module patches: the checked shortcuts of :mod:`~napari_sam2.engine.speed` and
:mod:`~napari_sam2.engine.shared_query` (a faster ``forward`` per module instance, cached
position encodings) are computed there and installed through the functions at the end of this
file (:func:`set_forward`, :func:`set_hiera_position_embedding` ...): no other module sets an
attribute on a transformers object or reads one of its private names.
"""

from __future__ import annotations

import types
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["Sam2Adapter", "Sam3TrackerAdapter", "EdgeTamAdapter", "adapter_for", "builtin_adapters",
           "own_forward", "set_forward", "restore_forward", "set_position_encoding",
           "hiera_position_embedding", "own_hiera_position_embedding", "set_hiera_position_embedding",
           "attention_implementation", "uncompile"]


def builtin_adapters() -> dict[type, type[Sam2Adapter]]:
    """The transformers network classes napari-sam2 drives, each with its adapter class.

    A new dict on every call (transformers is imported only when a network is driven).
    """
    from transformers import EdgeTamVideoModel, Sam2VideoModel, Sam3TrackerVideoModel

    # transformers' SAM 3 tracker and EdgeTAM classes copy SAM 2's code, not subclass it
    return {Sam2VideoModel: Sam2Adapter, Sam3TrackerVideoModel: Sam3TrackerAdapter,
            EdgeTamVideoModel: EdgeTamAdapter}


def adapter_for(network: Any, adapters: Mapping[type, type[Sam2Adapter]] | None = None) -> Sam2Adapter:
    """The adapter that drives ``network``.

    Parameters
    ----------
    network : transformers.Sam2VideoModel, Sam3TrackerVideoModel or EdgeTamVideoModel
        The network (or an instance of a subclass of one of them).
    adapters : mapping of network class to adapter class, optional
        Default :func:`builtin_adapters`. The entry of the class nearest to the network's own
        in its class hierarchy is used, so a family whose network subclasses SAM 2's is driven
        by SAM 2's adapter until it brings its own: ``{**builtin_adapters(), Family: FamilyAdapter}``.

    Raises
    ------
    TypeError
        If no class of the network's hierarchy has an adapter.
    """
    table = builtin_adapters() if adapters is None else adapters
    for cls in type(network).__mro__:
        adapter_class = table.get(cls)
        if adapter_class is not None:
            return adapter_class(network)
    raise TypeError(f"no adapter drives a {type(network).__name__}: napari-sam2 runs SAM 2 video models")


class Sam2Adapter:
    """Drive a transformers ``Sam2VideoModel`` step by step.

    Parameters
    ----------
    network : transformers.Sam2VideoModel
        The network, in eval mode.

    Notes
    -----
    Tensors follow transformers' layouts: vision features are ``(H*W, batch, channels)``
    (one entry per feature level), stored memories ``(H*W, batch, 64)``, and a step's output
    is a dict with ``pred_masks`` ``(batch, 1, h, w)`` low-resolution logits,
    ``object_pointer``, ``high_res_masks`` and ``object_score_logits``, as transformers' own
    ``_run_single_frame_inference`` returns.
    """

    #: transformers' inference-session class for this family's networks.
    session_class = "Sam2VideoInferenceSession"
    #: The object (batch) axis of stored memories: ``(H*W, batch, 64)``.
    memory_batch_dim = 1
    #: Whether memory attention and the decoder take several objects in one batch.
    tracks_batches = True

    def __init__(self, network):
        self.network = network
        cfg = network.config
        self.image_size = int(cfg.image_size)
        self.num_maskmem = int(network.num_maskmem)
        self.hidden_dim = int(network.hidden_dim)
        self.feature_sizes = [tuple(s) for s in network.backbone_feature_sizes]
        self.max_object_pointers = int(cfg.max_object_pointers_in_encoder)

    # ------------------------------------------------------------------ inference sessions
    def new_state(self, *, frames, cache, frame_shape, device, obj_id: int | None = None):
        """A transformers inference session reading ``frames`` and caching features in ``cache``.

        With ``obj_id`` the session holds that one object, at index 0 (the engine gives every
        object its own session so that objects stay independent).
        """
        import transformers

        state = getattr(transformers, self.session_class)(
            video_height=frame_shape[0], video_width=frame_shape[1],
            inference_device=device, inference_state_device=device, video_storage_device=device,
            dtype=torch.float32,
        )
        # transformers reads frames through len() and [] and features through the cache's
        # get/cache methods: lazy frames and a bounded cache stand in for its own
        state.processed_frames = frames
        state.cache = cache
        if obj_id is not None:
            state.obj_id_to_idx(obj_id)
        return state

    @staticmethod
    def cond_outputs(state) -> dict:
        """frame -> output of the object's conditioning (prompted) frames."""
        return state.output_dict_per_obj[0]["cond_frame_outputs"]

    @staticmethod
    def non_cond_outputs(state) -> dict:
        """frame -> output of the object's tracked frames."""
        return state.output_dict_per_obj[0]["non_cond_frame_outputs"]

    @staticmethod
    def frames_done(state) -> dict:
        """Frame -> ``{"reverse": bool}`` for every frame the object was segmented on.

        Prompted or tracked frames, with the direction each was tracked in (transformers'
        ``frames_tracked_per_obj``).
        """
        return state.frames_tracked_per_obj[0]

    @staticmethod
    def point_inputs(state) -> dict:
        """frame -> ``{"point_coords", "point_labels"}`` of the object's click/box prompts."""
        return state.point_inputs_per_obj[0]

    @staticmethod
    def mask_inputs(state) -> dict:
        """frame -> the object's mask prompt at model size."""
        return state.mask_inputs_per_obj[0]

    # ------------------------------------------------------------------ network steps
    def vision_features(self, state, frame: int):
        """The frame's image features and positional encodings (from the cache or the encoder)."""
        return self.network._prepare_vision_features(inference_session=state, frame_idx=frame, batch_size=1)

    def high_res_features(self, feats, batch: int = 1) -> list:
        """The decoder's high-resolution feature maps ``(batch, C, H, W)`` from ``feats``."""
        maps = [x.permute(1, 2, 0).view(x.size(1), x.size(2), *s)
                for x, s in zip(feats[:-1], self.feature_sizes[:-1])]
        return [m.expand(batch, -1, -1, -1) for m in maps] if batch > 1 else maps

    def mask_as_output(self, feats, high_res, mask_inputs) -> tuple[dict, torch.Tensor]:
        """A mask prompt taken as the frame's output (SAM 2's ``_use_mask_as_output``)."""
        net = self.network
        pix = feats[-1].permute(1, 2, 0).view(-1, self.hidden_dim, *self.feature_sizes[-1])
        sam = net._use_mask_as_output(backbone_features=pix, high_res_features=high_res,
                                      mask_inputs=mask_inputs)
        return self._output(sam), sam.iou_scores.float().amax(dim=-1).reshape(-1)

    def condition_on_memory(self, states: list, frame: int, feats, pos, *, is_init: bool,
                            n_frames: int, reverse: bool):
        """Memory attention: the frame's top-level features conditioned on each object's memory.

        ``states`` are the objects' sessions; several objects are batched together and must
        have the same :meth:`memory_signature` on this frame. Returns ``(batch, C, H, W)``.
        """
        vision, vision_pos = feats[-1], pos[-1]
        if len(states) == 1:
            return self.network._prepare_memory_conditioned_features(
                inference_session=states[0], frame_idx=frame, obj_idx=0,
                is_initial_conditioning_frame=is_init,
                current_vision_features=vision, current_vision_positional_embeddings=vision_pos,
                num_total_frames=n_frames, track_in_reverse_time=reverse, streaming=False,
            )
        if is_init:
            raise ValueError("a batch of objects is conditioned on memory for tracking only")
        b = len(states)
        state = self._merged_state(states, frame, reverse, n_frames)
        return self._condition_batch(state, frame, vision.expand(-1, b, -1), vision_pos.expand(-1, b, -1),
                                     n_frames, reverse)

    def _condition_batch(self, state, frame, vision, vision_pos, n_frames, reverse):
        """``_prepare_memory_conditioned_features`` for a batch of objects (tracking frames).

        transformers' version reshapes the memory attention's output in a way that is right
        for a batch of one only, so its steps are taken here with its own helpers and the
        output laid out per object. ``tests/engine/test_transformers_api.py`` checks that a
        batch of one gives exactly transformers' result.
        """
        net = self.network
        b = vision.size(1)
        h, w = self.feature_sizes[-1]
        device = vision.device
        if self.num_maskmem == 0:
            return vision.permute(1, 2, 0).reshape(b, self.hidden_dim, h, w)
        previous = net._gather_memory_frame_outputs(
            inference_session=state, obj_idx=0, frame_idx=frame, track_in_reverse_time=reverse)
        memories, memory_pos = net._build_memory_attention_inputs(
            temporal_positions_and_previous_outputs=previous, device=device)
        offsets, pointers, max_pointers = net._get_object_pointers(
            inference_session=state, obj_idx=0, frame_idx=frame, num_total_frames=n_frames, device=device,
            track_in_reverse_time=reverse, streaming=False)
        n_pointer_tokens = 0
        if pointers:
            obj_ptrs, obj_ptrs_pos = net._process_object_pointers(
                temporal_offsets=offsets, pointer_tokens=pointers, max_object_pointers_to_use=max_pointers,
                batch_size=b, num_channels=self.hidden_dim, device=device)
            if obj_ptrs is not None:
                memories.append(obj_ptrs)
                memory_pos.append(obj_ptrs_pos)
                n_pointer_tokens = obj_ptrs.shape[0]
        memory = torch.cat(memories, dim=0).to(dtype=state.dtype)
        memory_pos = torch.cat(memory_pos, dim=0)
        out = net.memory_attention(
            current_vision_features=vision, current_vision_position_embeddings=vision_pos,
            memory=memory, memory_posision_embeddings=memory_pos, num_object_pointer_tokens=n_pointer_tokens,
        )
        # (1, batch, H*W, C) -> (batch, C, H, W)
        return out.squeeze(0).transpose(1, 2).reshape(b, self.hidden_dim, h, w)

    def memory_window(self, n_frames: int) -> int:
        """How many frames behind the current one SAM 2 reads (memories and object pointers)."""
        return max(self.num_maskmem - 1, min(n_frames, self.max_object_pointers) - 1)

    def memory_signature(self, state, frame: int, reverse: bool, n_frames: int) -> tuple:
        """What SAM 2 reads from an object's memory on ``frame``: equal signatures, same reads.

        The conditioning frames (in the order they are read) and the tracked frames within
        :meth:`memory_window` behind ``frame`` in the direction of tracking.
        """
        cond = self.cond_outputs(state)
        non_cond = self.non_cond_outputs(state)
        step = 1 if reverse else -1
        behind = []
        for off in range(1, self.memory_window(n_frames) + 1):
            f = frame + step * off
            if not 0 <= f < n_frames:
                break
            if f in non_cond:
                behind.append(f)
        return tuple(cond), tuple(behind)

    def _merged_state(self, states: list, frame: int, reverse: bool, n_frames: int):
        """One session whose object 0 holds the memories of ``states``, stacked along the batch."""
        view = self.new_state(frames=(), cache=None, frame_shape=(1, 1), device=self.network.device, obj_id=0)
        n = len(states)

        def merge(outs: list, pointer_only: bool) -> dict:
            merged = {"object_pointer": torch.cat([o["object_pointer"] for o in outs], dim=0)}
            if not pointer_only:
                dim = self.memory_batch_dim
                merged["maskmem_features"] = torch.cat([o["maskmem_features"] for o in outs], dim=dim)
                pos = outs[0]["maskmem_pos_enc"]
                merged["maskmem_pos_enc"] = pos.expand(*[n if d == dim else -1 for d in range(pos.ndim)])
            return merged

        conds = [self.cond_outputs(s) for s in states]
        merged_cond = self.cond_outputs(view)
        for f in conds[0]:
            merged_cond[f] = merge([c[f] for c in conds], pointer_only=False)
        non_conds = [self.non_cond_outputs(s) for s in states]
        merged_non_cond = self.non_cond_outputs(view)
        step = 1 if reverse else -1
        for off in range(1, self.memory_window(n_frames) + 1):
            f = frame + step * off
            if f in non_conds[0]:
                # memories are read from the last num_maskmem - 1 frames, pointers from more
                merged_non_cond[f] = merge([c[f] for c in non_conds], pointer_only=off >= self.num_maskmem)
        return view

    def use_multimask(self, is_init: bool, point_inputs) -> bool:
        """Whether the decoder returns its best of several candidate masks."""
        return self.network._use_multimask(is_init_cond_frame=is_init, point_inputs=point_inputs)

    def decode(self, pix, high_res, *, point_inputs=None, mask_logits=None,
               is_init: bool = False) -> tuple[dict, torch.Tensor]:
        """Mask decoder on memory-conditioned features ``pix`` ``(batch, C, H, W)``.

        Returns the step's output (see the class notes) and the predicted IoU of each returned
        mask ``(batch,)``. A batch of several objects is for tracking only (no prompts).
        """
        multimask = self.use_multimask(is_init, point_inputs)
        if pix.shape[0] == 1:
            sam = self.network._single_frame_forward(
                pixel_values=None,
                input_points=None if point_inputs is None else point_inputs["point_coords"],
                input_labels=None if point_inputs is None else point_inputs["point_labels"],
                input_masks=mask_logits,
                image_embeddings=list(high_res) + [pix],
                multimask_output=multimask,
            )
            return self._output(sam), sam.iou_scores.float().amax(dim=-1).reshape(-1)
        if point_inputs is not None or mask_logits is not None:
            raise ValueError("a batch of objects is decoded for tracking only, without prompts")
        return self._decode_batch(pix, high_res, multimask)

    def _decode_batch(self, pix, high_res, multimask: bool) -> tuple[dict, torch.Tensor]:
        """``_single_frame_forward`` for a batch of objects without prompts.

        transformers' version picks the best of the candidate masks with indices that only
        broadcast correctly for a batch of one (a batch of B gives B x B masks), so the same
        steps are taken here on transformers' prompt encoder and mask decoder, with the pick
        done per object. ``tests/engine/test_transformers_api.py`` checks that a batch of one
        gives exactly ``_single_frame_forward``'s result.
        """
        from transformers.models.sam2_video.modeling_sam2_video import NO_OBJ_SCORE

        net = self.network
        b = pix.shape[0]
        image_pe = net.get_image_wide_positional_embeddings().repeat(b, 1, 1, 1)
        # no prompt: one padding point (label -1), as transformers does
        points = torch.zeros(b, 1, 1, 2, dtype=pix.dtype, device=pix.device)
        labels = -torch.ones(b, 1, 1, dtype=torch.int32, device=pix.device)
        sparse, dense = net.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None,
                                           input_masks=None)
        low_multi, iou, tokens, scores = net.mask_decoder(
            image_embeddings=pix, image_positional_embeddings=image_pe,
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask, high_resolution_features=list(high_res),
        )
        appearing = scores > 0
        low_multi = torch.where(appearing[:, None, None], low_multi, NO_OBJ_SCORE)
        token = tokens[:, :, 0]
        if multimask:
            best = torch.argmax(iou, dim=-1)[:, 0]  # (b,)
            rows = torch.arange(b, device=pix.device)
            low = low_multi[rows, 0, best][:, None]
            if tokens.size(2) > 1:
                token = tokens[rows, 0, best][:, None]
        else:
            low = low_multi[:, :, 0]
        # upsampled after the pick (transformers upsamples every candidate, then picks)
        high = F.interpolate(low.float(), size=(self.image_size, self.image_size), mode="bilinear",
                             align_corners=False).to(low.dtype)
        pointer = net.object_pointer_proj(token)
        lam = appearing.to(pointer.dtype)
        pointer = lam * pointer + (1 - lam) * net.no_object_pointer
        out = {"pred_masks": low, "object_pointer": pointer, "high_res_masks": high,
               "object_score_logits": scores}
        return out, iou.float().amax(dim=-1).reshape(-1)

    def encode_memory(self, vision, high_res_masks, score_logits, *, from_prompt: bool):
        """Memory encoder: ``(features, positional encoding)``, each ``(H*W, batch, 64)``.

        ``vision`` is the frame's top-level feature ``(H*W, 1, C)``, shared by the batch.
        """
        vis = vision.expand(-1, high_res_masks.shape[0], -1)
        return self.network._encode_new_memory(
            current_vision_feats=vis, pred_masks_high_res=high_res_masks,
            object_score_logits=score_logits, is_mask_from_pts=from_prompt,
        )

    @staticmethod
    def _output(sam) -> dict[str, Any]:
        return {
            "pred_masks": sam.pred_masks,
            "object_pointer": sam.object_pointer,
            "high_res_masks": sam.high_res_masks,
            "object_score_logits": sam.object_score_logits,
        }


class Sam3TrackerAdapter(Sam2Adapter):
    """SAM 3's tracker (``Sam3TrackerVideoModel``): SAM 2's tracker on a ViT image encoder.

    transformers' class is a copy of SAM 2's with the same private methods; only the inference
    session class differs. Its mask decoder returns masks at 4 x the image-feature side (288 at
    1008 px), a mask prompt a quarter of the input (252): the session compares at the former.
    """

    session_class = "Sam3TrackerVideoInferenceSession"


class EdgeTamAdapter(Sam2Adapter):
    """EdgeTAM (``EdgeTamVideoModel``): SAM 2's tracker with memories compressed by a perceiver.

    Its ``_encode_new_memory`` returns ``(batch, latents, 64)`` memories (the perceiver's
    latents, not a feature map) and runs the perceiver for one object at a time (transformers'
    2-D latents are ``view``-ed in a way that fails for a batch), so several objects' memories
    are encoded one after the other and stacked on axis 0.
    """

    session_class = "EdgeTamVideoInferenceSession"
    memory_batch_dim = 0
    # its memory attention's rotary encoding reshapes keys for one object only
    tracks_batches = False

    def encode_memory(self, vision, high_res_masks, score_logits, *, from_prompt: bool):
        """Encode memories one object at a time (EdgeTAM's spatial perceiver takes one)."""
        feats, poss = [], []
        for i in range(high_res_masks.shape[0]):
            mem, pos = super().encode_memory(vision, high_res_masks[i:i + 1], score_logits[i:i + 1],
                                             from_prompt=from_prompt)
            feats.append(mem)
            poss.append(pos)
        if len(feats) == 1:
            return feats[0], poss[0]
        return torch.cat(feats, dim=0), torch.cat(poss, dim=0)


# --------------------------------------------------------------------------- module patches

def own_forward(module) -> Any:
    """The ``forward`` installed on this module instance (by :func:`set_forward`), or None."""
    return module.__dict__.get("forward")


def set_forward(module, function: Callable) -> None:
    """Give one module instance its own ``forward``: ``function(module, ...)``, bound to it.

    The class keeps transformers' ``forward``; :func:`restore_forward` goes back to it.
    """
    module.forward = types.MethodType(function, module)


def restore_forward(module) -> None:
    """Take away a ``forward`` installed by :func:`set_forward` (the class's runs again)."""
    module.__dict__.pop("forward", None)


def set_position_encoding(module, encoding) -> None:
    """Replace a vision neck layer's ``position_encoding`` submodule (a weight-free sine encoding)."""
    module.position_encoding = encoding


def hiera_position_embedding(module) -> Callable | None:
    """transformers' resizing of a Hiera backbone's learned position embedding, or None.

    ``Sam2HieraDetModel._get_pos_embed(hw)``, as a function of ``(module, hw)``; None for a
    module that has none (or learned embeddings of another form).
    """
    return getattr(type(module), "_get_pos_embed", None)


def own_hiera_position_embedding(module) -> Any:
    """The ``_get_pos_embed`` installed on this instance (:func:`set_hiera_position_embedding`), or None."""
    return module.__dict__.get("_get_pos_embed")


def set_hiera_position_embedding(module, function: Callable) -> None:
    """Give one Hiera backbone its own ``_get_pos_embed(hw)`` (a plain function of ``hw``)."""
    module._get_pos_embed = function


def attention_implementation(module) -> str:
    """The attention kernel a module's config asks transformers for ("sdpa", "eager" ...)."""
    return module.config._attn_implementation


def uncompile(module) -> None:
    """Back to eager calls after ``module.compile()`` (torch keeps the compiled callable there)."""
    module._compiled_call_impl = None
