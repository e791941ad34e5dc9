"""SAM 3's tracker and EdgeTAM through the engine: their masks equal their own transformers session's.

Each family's reference is its own transformers inference session (``Sam3TrackerVideoInferenceSession``,
``EdgeTamVideoInferenceSession``) used as transformers' documentation shows, with every frame
preloaded from ``session.source.model_input`` (the frames the engine feeds the network, which a
hook on the image encoder checks). The networks are small random ones built by the tests
(:mod:`napari_sam2.testing`); EdgeTAM's tracker runs on a small Hiera image encoder (its RepViT
encoder needs timm and torchvision, see ``test_edgetam_without_timm_is_a_clear_error``).
"""

from __future__ import annotations

import inspect
import json

import _reference_session
import numpy as np
import pytest
import torch

from napari_sam2 import Sam2Session, load_model
from napari_sam2.conversions import rowcol_to_model_xy
from napari_sam2.engine.families import FAMILIES
from napari_sam2.engine.tracking import mask_from_logits
from napari_sam2.errors import ModelLoadError
from napari_sam2.testing import make_tiny_model, save_tiny_model

FAMILY_KEYS = ["sam3", "edgetam"]


@pytest.fixture(scope="module", params=FAMILY_KEYS)
def net(request):
    """A random tiny network of each family (shared: do not modify its weights)."""
    return make_tiny_model(family=request.param, seed=0)


class Reference(_reference_session.Reference):
    """The family's own session, with a correction click kept as SAM 2's predictor keeps it."""

    def correct(self, frame, obj_id, points, labels):
        """A click on a tracked frame, refining its mask; returns the corrected mask.

        The frame is kept as a conditioning frame, as the engine and SAM 2's own predictor do.
        """
        net = self.model
        idx = self.state.obj_id_to_idx(obj_id)
        xy = rowcol_to_model_xy(points, self.s.frame_shape, self.s.model.image_size)
        inputs = {"point_coords": torch.from_numpy(xy)[None, None],
                  "point_labels": torch.tensor(labels, dtype=torch.int32)[None, None]}
        outputs = self.state.output_dict_per_obj[idx]
        previous = outputs["non_cond_frame_outputs"][frame]["pred_masks"]
        extra = {}
        if "run_mem_encoder" in inspect.signature(net._run_single_frame_inference).parameters:
            extra["run_mem_encoder"] = True  # EdgeTAM encodes the memory inside
        with torch.inference_mode():
            out = net._run_single_frame_inference(
                inference_session=self.state, frame_idx=frame, obj_idx=idx, batch_size=1,
                is_init_cond_frame=False, point_inputs=inputs, mask_inputs=None,
                reverse=self.state.frames_tracked_per_obj[idx][frame]["reverse"],
                prev_sam_mask_logits=torch.clamp(previous, -32, 32), **extra,
            )
            if out.get("maskmem_features") is None:
                feats, _ = net._prepare_vision_features(self.state, frame, 1)
                out["maskmem_features"], out["maskmem_pos_enc"] = net._encode_new_memory(
                    current_vision_feats=feats[-1], pred_masks_high_res=out["high_res_masks"],
                    object_score_logits=out["object_score_logits"], is_mask_from_pts=True,
                )
        self.state.add_point_inputs(idx, frame, inputs)
        outputs["cond_frame_outputs"][frame] = out
        del outputs["non_cond_frame_outputs"][frame]
        return mask_from_logits(out["pred_masks"], self.s.frame_shape)


def _stack(n=10, h=72, w=88, seed=3):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for i in range(n):
        disc = ((yy - 30 - i) ** 2 + (xx - 30 - 2 * i) ** 2) < 12 ** 2
        frames.append(30 * rng.random((h, w)) + 180 * disc + 40 * (xx > 60))
    return np.stack(frames).astype(np.uint8)


def _assert_same(ours, ref, context):
    assert set(ours) == set(ref), context
    for obj_id in ref:
        np.testing.assert_array_equal(ours[obj_id], ref[obj_id], err_msg=f"{context}, object {obj_id}")


def _propagate_both(session, ref):
    ours = dict(session.propagate("both"))
    theirs = dict(ref.propagate(reverse=False))
    theirs.update(ref.propagate(reverse=True))
    return ours, theirs


def test_each_family_gets_its_own_preprocessing(net):
    """Input size, mean and std are the family's, and model_input is what the encoder sees."""
    session = Sam2Session(net, _stack(n=3))
    family = session.model.family
    assert family.model_class == type(net).__name__
    size = session.model.image_size
    assert size == {"sam3": 224, "edgetam": 256}[family.key]
    x = session.source.model_input(1)
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    # undo the normalisation: the family's mean/std bring it back to the [0, 1] frame
    mean = torch.tensor(family.image_mean).view(3, 1, 1)
    std = torch.tensor(family.image_std).view(3, 1, 1)
    unit = x * std + mean
    assert float(unit.min()) > -1e-5 and float(unit.max()) < 1 + 1e-5 and float(unit.max()) > 0.9
    if family.key == "sam3":
        assert family.image_mean == (0.5, 0.5, 0.5) and float(x.min()) < -0.5  # [-1, 1] input

    seen = []
    hook = net.vision_encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    try:
        session.add_points(1, 1, [[30, 30]], [1])
    finally:
        hook.remove()
    assert len(seen) == 1
    torch.testing.assert_close(seen[0][0], x, rtol=0, atol=0)


@pytest.mark.parametrize("prompt_frame", [0, 4])
def test_clicks_and_propagation_match_the_familys_session(net, prompt_frame):
    stack = _stack()
    session = Sam2Session(net, stack)
    ref = Reference(net, session)
    clicks = {1: ([[30, 30], [50, 20]], [1, 0]), 2: ([[60, 75]], [1])}
    ours_click = {}
    for obj_id, (pts, labs) in clicks.items():
        ours_click[obj_id] = session.add_points(prompt_frame, obj_id, pts, labs)
        ref.points(prompt_frame, obj_id, pts, labs)
    _assert_same(ours_click, ref.run_frame(prompt_frame), "click")
    assert any(m.any() for m in ours_click.values()), "a random network that sees nothing tests nothing"

    ours, theirs = _propagate_both(session, ref)
    assert sorted(ours) == list(range(len(stack)))
    for frame in theirs:
        _assert_same(ours[frame], theirs[frame], f"frame {frame}")
    assert any(ours[f][1].any() for f in ours if f != prompt_frame)


def test_box_and_mask_prompts_match_the_familys_session(net):
    stack = _stack(seed=5)
    session = Sam2Session(net, stack)
    # one reference session per object: objects are independent in SAM 2's tracker, and
    # transformers' EdgeTAM forward fails to stack a mask-prompted and a box-prompted object's
    # scores on one frame (tensors of 2 and 1 dimensions)
    ref_box, ref_mask = Reference(net, session), Reference(net, session)
    box = [[20, 18], [45, 50]]
    seed = np.zeros(stack.shape[1:], bool)
    seed[40:60, 55:80] = True
    got_box = session.add_box(2, 1, box)
    got_mask = session.add_mask(2, 2, seed)
    ref_box.box(2, 1, box)
    ref_mask.mask(2, 2, seed)
    np.testing.assert_array_equal(got_box, ref_box.run_frame(2)[1])
    ref_mask.run_frame(2)
    np.testing.assert_array_equal(got_mask, seed)  # a mask prompt is returned exactly as given

    ours = dict(session.propagate("both"))
    for obj_id, ref in ((1, ref_box), (2, ref_mask)):
        theirs = dict(ref.propagate(reverse=False))
        theirs.update(ref.propagate(reverse=True))
        assert sorted(theirs) == sorted(ours)
        for frame in theirs:
            if frame == 2 and obj_id == 2:
                np.testing.assert_array_equal(ours[frame][2], seed)
            else:
                np.testing.assert_array_equal(ours[frame][obj_id], theirs[frame][obj_id],
                                              err_msg=f"object {obj_id}, frame {frame}")


def test_backward_only_then_forward(net):
    stack = _stack(seed=7)
    session = Sam2Session(net, stack)
    ref = Reference(net, session)
    session.add_points(6, 1, [[40, 40]], [1])
    ref.points(6, 1, [[40, 40]], [1])
    ref.run_frame(6)
    back = list(session.propagate("backward"))
    assert [f for f, _ in back] == [6, 5, 4, 3, 2, 1, 0]
    theirs = dict(ref.propagate(reverse=True))
    for frame, masks in back:
        _assert_same(masks, theirs[frame], f"backward frame {frame}")
    fwd = dict(session.propagate("forward"))
    assert sorted(fwd) == [6, 7, 8, 9]
    theirs = dict(ref.propagate(reverse=False))
    for frame in fwd:
        _assert_same(fwd[frame], theirs[frame], f"forward frame {frame}")


def test_a_correction_is_kept_and_tracked_like_the_familys_session(net):
    stack = _stack(seed=9)
    session = Sam2Session(net, stack)
    ref = Reference(net, session)
    session.add_points(0, 1, [[30, 30]], [1])
    ref.points(0, 1, [[30, 30]], [1])
    ref.run_frame(0)
    first = dict(session.propagate("forward"))
    theirs = dict(ref.propagate())
    for frame in theirs:
        _assert_same(first[frame], theirs[frame], f"first pass, frame {frame}")

    fixed = session.add_points(5, 1, [[60, 70]], [0])  # a negative click on a tracked frame
    np.testing.assert_array_equal(fixed, ref.correct(5, 1, [[60, 70]], [0]))
    assert session.prompted_frames(1) == [0, 5]

    second = dict(session.propagate("forward"))
    np.testing.assert_array_equal(second[5][1], fixed)  # the correction is kept
    theirs = dict(ref.propagate())
    for frame in theirs:
        _assert_same(second[frame], theirs[frame], f"after the correction, frame {frame}")
    assert any(not np.array_equal(second[f][1], first[f][1]) for f in range(6, 10))


def test_memory_is_pruned_without_changing_masks(net):
    # keep_frames=16 (the default) keeps the 16 object pointers SAM 2's tracker reads; fewer
    # changes EdgeTAM's masks (one pixel of 2304 at keep_frames=8)
    n = 50
    stack = _stack(n=n, h=48, w=48, seed=11)
    pruned = Sam2Session(net, stack, keep_frames=16)
    full = Sam2Session(net, stack, keep_frames=None)
    for s in (pruned, full):
        s.add_points(25, 1, [[20, 20]], [1])
    a = dict(pruned.propagate("both"))
    b = dict(full.propagate("both"))
    for frame in range(n):
        np.testing.assert_array_equal(a[frame][1], b[frame][1], err_msg=f"frame {frame}")
    kept = sorted(pruned._objects[1].non_cond)
    assert kept == [f for f in range(0, 42) if f != 25]
    assert len(full._objects[1].non_cond) == n - 1


def test_family_folders_load_with_their_family(tmp_path, net):
    family = [f for f in FAMILIES.values() if f.model_class == type(net).__name__][0]
    folder = save_tiny_model(tmp_path / family.key, family=family.key)
    model = load_model(folder, device="cpu")
    assert model.family is family and type(model.network) is type(net)
    assert model.image_mean == family.image_mean and model.info["source"] == "folder"
    # a folder's own processor files override the family's normalisation
    (folder / "preprocessor_config.json").write_text(json.dumps(
        {"image_mean": [0.4, 0.4, 0.4], "image_std": [0.2, 0.2, 0.2],
         "size": {"height": model.image_size, "width": model.image_size}}))
    custom = load_model(folder, device="cpu")
    assert custom.image_mean == (0.4, 0.4, 0.4) and custom.image_std == (0.2, 0.2, 0.2)
    assert custom.signature != model.signature
    x = Sam2Session(custom, _stack(n=1)).source.model_input(0)
    y = Sam2Session(model, _stack(n=1)).source.model_input(0)
    std, mean = torch.tensor(family.image_std), torch.tensor(family.image_mean)
    torch.testing.assert_close((x * 0.2 + 0.4), (y * std.view(3, 1, 1) + mean.view(3, 1, 1)),
                               rtol=0, atol=1e-5)


def test_edgetam_without_timm_is_a_clear_error(tmp_path, monkeypatch):
    """The released EdgeTAM's RepViT encoder is timm's: without it, one line that says what to install."""
    from transformers import EdgeTamVideoConfig

    folder = save_tiny_model(tmp_path / "edgetam", family="edgetam")
    config = json.loads((folder / "config.json").read_text())
    released = EdgeTamVideoConfig(vision_config={"model_type": "edgetam_vision_model"}).to_dict()
    config["vision_config"] = released["vision_config"]
    assert config["vision_config"]["backbone_config"]["model_type"] == "timm_wrapper"
    (folder / "config.json").write_text(json.dumps(config))

    import importlib.util

    real = importlib.util.find_spec
    def find_spec(name, *a, **k):
        return None if name in ("timm", "torchvision") else real(name, *a, **k)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ModelLoadError, match=r"pip install 'napari-sam2\[edgetam\]'") as info:
        load_model(folder, device="cpu")
    assert "timm" in str(info.value) and "\n" not in str(info.value)


def test_edgetam_by_name_without_timm_is_refused_before_the_download(tmp_path, monkeypatch):
    """A user without timm learns what to install once config.json is read, before the weights."""
    import importlib.util

    import huggingface_hub
    from transformers import EdgeTamVideoConfig

    hub = tmp_path / "hub"  # the released repository's config.json, as the hub serves it
    hub.mkdir()
    EdgeTamVideoConfig(vision_config={"model_type": "edgetam_vision_model"}).save_pretrained(hub)
    fetched = []

    def snapshot_download(repo_id, allow_patterns, **kwargs):
        fetched.append((repo_id, list(allow_patterns)))
        if allow_patterns != ["config.json"]:
            raise AssertionError("the weights were fetched before the check")
        return str(hub)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **k: None if name == "timm" else real(name, *a, **k))
    with pytest.raises(ModelLoadError, match=r"needs timm.*pip install 'napari-sam2\[edgetam\]'") as info:
        load_model("edgetam", device="cpu")
    assert "yonigozlan/EdgeTAM-hf on the Hugging Face hub" in str(info.value)
    assert fetched == [("yonigozlan/EdgeTAM-hf", ["config.json"])]


def test_sam3_hub_layout_loads_the_tracker(tmp_path):
    """facebook/sam3 holds the whole SAM 3 (model_type 'sam3_video'): the tracker loads from it."""
    from safetensors.torch import save_file

    from napari_sam2.testing import tiny_sam3_config

    net = make_tiny_model(family="sam3", seed=1)
    tracker = tiny_sam3_config().to_dict()
    folder = tmp_path / "sam3"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "sam3_video", "tracker_config": tracker}))
    weights = {}
    for key, value in net.state_dict().items():
        if key.startswith("vision_encoder.backbone."):
            key = "detector_model." + key  # the image encoder is shared with the detector
        elif key.startswith("vision_encoder.neck."):
            key = "tracker_neck." + key[len("vision_encoder.neck."):]
        else:
            key = "tracker_model." + key
        weights[key] = value.contiguous()
    weights["detector_model.text_encoder.dummy"] = torch.zeros(2)  # ignored: not the tracker's
    save_file(weights, str(folder / "model.safetensors"))
    model = load_model(folder, device="cpu")
    assert model.family.key == "sam3"
    ours = model.network.state_dict()
    for key, value in net.state_dict().items():
        torch.testing.assert_close(ours[key], value, rtol=0, atol=0, msg=key)


def _released_edgetam_names():
    """Tensor names and shapes of the released EdgeTAM, on Meta's side and on transformers'.

    Recorded from facebookresearch/EdgeTAM's own code and from transformers' EdgeTamVideoModel
    where timm imports (tests/data/edgetam_tensor_names.json.gz says how).
    """
    import gzip
    import json
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "data" / "edgetam_tensor_names.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


def test_every_tensor_of_metas_edgetam_finds_its_transformers_name():
    from napari_sam2.engine.edgetam_checkpoint import edgetam_meta_to_hf, is_edgetam_checkpoint

    names = _released_edgetam_names()
    meta = {k: torch.empty(shape, device="meta") for k, shape in names["meta"].items()}
    assert is_edgetam_checkpoint(meta)
    converted, unmapped = edgetam_meta_to_hf(meta)
    assert unmapped == []
    assert {k: list(v.shape) for k, v in converted.items()} == names["transformers"]


def test_metas_edgetam_checkpoint_without_timm_names_the_extra(tmp_path):
    from napari_sam2.engine.edgetam_checkpoint import edgetam_config
    from napari_sam2.engine.families import missing_dependencies

    path = tmp_path / "edgetam.pt"
    # Meta's names for the parts EdgeTAM adds to SAM 2 (enough to recognise the file)
    torch.save({"model": {"spatial_perceiver.latents": torch.zeros(4, 64),
                          "image_encoder.trunk.body.stem.0.weight": torch.zeros(1)}}, path)
    with pytest.raises(ModelLoadError, match="architecture is fixed"):
        load_model(path, image_size=512)
    if missing_dependencies(FAMILIES["edgetam"], edgetam_config().to_dict()) is None:
        pytest.skip("timm builds EdgeTAM's encoder here")
    with pytest.raises(ModelLoadError, match=r"is Meta's EdgeTAM: .*napari-sam2\[edgetam\]"):
        load_model(path)


@pytest.mark.parametrize("cls_name", ["Sam3TrackerVideoModel", "EdgeTamVideoModel"])
def test_family_classes_keep_the_private_methods_the_adapter_calls(cls_name):
    """The adapter drives every family through the same private methods (see test_transformers_api)."""
    import transformers

    cls = getattr(transformers, cls_name)
    required = {
        "_prepare_vision_features": ["inference_session", "frame_idx", "batch_size"],
        "_prepare_memory_conditioned_features": [
            "inference_session", "frame_idx", "obj_idx", "is_initial_conditioning_frame",
            "current_vision_features", "current_vision_positional_embeddings", "num_total_frames",
            "track_in_reverse_time", "streaming"],
        "_single_frame_forward": ["pixel_values", "input_points", "input_labels", "input_masks",
                                  "image_embeddings", "multimask_output"],
        "_use_mask_as_output": ["backbone_features", "high_res_features", "mask_inputs"],
        "_use_multimask": ["is_init_cond_frame", "point_inputs"],
        "_encode_new_memory": ["current_vision_feats", "pred_masks_high_res", "object_score_logits",
                               "is_mask_from_pts"],
    }
    for name, params in required.items():
        method = getattr(cls, name, None)
        assert method is not None, f"{cls_name}.{name} is gone: adapt napari_sam2/engine/adapter.py"
        missing = [p for p in params if p not in inspect.signature(method).parameters]
        assert not missing, f"{cls_name}.{name} lost parameters {missing}: adapt the adapter"


def _repvit_unavailable():
    from napari_sam2.engine.edgetam_checkpoint import edgetam_config
    from napari_sam2.engine.families import missing_dependencies

    released = edgetam_config().to_dict()
    return missing_dependencies(FAMILIES["edgetam"], released)


# Without torchvision timm cannot be used at all: `import timm` runs timm/layers/create_norm.py's
# `from torchvision.ops.misc import FrozenBatchNorm2d` (timm 0.9.16 to 1.0.31 alike), and
# transformers' is_timm_available() is false without torchvision, so TimmWrapperModel.__init__'s
# requires_backends(self, ["vision", "timm"]) refuses to build the encoder. PyPI's torchvision
# for torch 2.13 (0.28.0) links libtorch_cuda.so / libcudart.so.13, which a CPU torch lacks.
@pytest.mark.skipif(bool(_repvit_unavailable()),
                    reason="EdgeTAM's RepViT encoder is built by timm, which imports torchvision "
                           "(timm/layers/create_norm.py), and torchvision does not import here")
def test_released_edgetam_architecture_matches_its_session():
    """Where timm and torchvision import: the released EdgeTAM (RepViT encoder), random weights."""
    from transformers import EdgeTamVideoModel

    from napari_sam2.engine.edgetam_checkpoint import edgetam_config

    torch.manual_seed(0)
    config = edgetam_config(enable_temporal_pos_encoding_for_object_pointers=False,
                                     enable_occlusion_spatial_embedding=False)
    net = EdgeTamVideoModel(config).eval()
    with torch.no_grad():
        net.mask_decoder.pred_obj_score_head.proj_out.bias += 3.0
    stack = _stack(n=3)
    session = Sam2Session(net, stack)
    ref = Reference(net, session)
    mask = session.add_points(0, 1, [[30, 30]], [1])
    ref.points(0, 1, [[30, 30]], [1])
    np.testing.assert_array_equal(mask, ref.run_frame(0)[1])
    ours = dict(session.propagate("forward"))
    for frame, masks in ref.propagate():
        _assert_same(ours[frame], masks, f"frame {frame}")


@pytest.mark.skipif(bool(_repvit_unavailable()),
                    reason="EdgeTAM's RepViT encoder is built by timm, which imports torchvision "
                           "(timm/layers/create_norm.py), and torchvision does not import here")
def test_released_edgetam_through_load_model_gives_the_networks_masks(tmp_path):
    """A folder of the released EdgeTAM architecture, loaded as a user does, tracks as the bare network."""
    from transformers import EdgeTamVideoModel

    from napari_sam2 import load_model
    from napari_sam2.engine.edgetam_checkpoint import edgetam_config

    torch.manual_seed(0)
    net = EdgeTamVideoModel(edgetam_config()).eval()
    with torch.no_grad():
        net.mask_decoder.pred_obj_score_head.proj_out.bias += 3.0
    net.save_pretrained(tmp_path / "edgetam")
    model = load_model(tmp_path / "edgetam")
    stack = _stack(n=4)
    bare, ours = Sam2Session(net, stack), Sam2Session(model, stack)
    for session in (bare, ours):
        session.add_points(1, 1, [[30, 30]], [1])
        session.add_box(1, 2, [[5, 5], [25, 40]])
    expected = dict(bare.propagate("both"))
    for frame, masks in ours.propagate("both"):
        _assert_same(masks, expected[frame], f"frame {frame}")
    corrected = ours.add_points(3, 1, [[32, 28]], [0])
    np.testing.assert_array_equal(dict(ours.propagate("forward"))[3][1], corrected)
