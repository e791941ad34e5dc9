"""The fast paths change nothing: shared position encodings, compiled modules, device-side frames."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from _memory_inputs import memory_attention_inputs

from napari_sam2 import Sam2Session, load_model
from napari_sam2.engine import speed
from napari_sam2.engine.frames import FrameSource
from napari_sam2.testing import make_tiny_model

# torch.compile's graph capture of the whole network takes over a quarter of an hour on a
# 2-core CPU: these run where NAPARI_SAM2_TEST_COMPILE=1 is set (a GPU machine, a release check)
needs_compile_time = pytest.mark.skipif(
    os.environ.get("NAPARI_SAM2_TEST_COMPILE") != "1",
    reason="torch.compile tests are slow on CPU: set NAPARI_SAM2_TEST_COMPILE=1 to run them",
)


@pytest.mark.parametrize("family", ["sam2", "sam3", "edgetam"])
def test_shared_position_encodings_give_the_same_features(family):
    plain = make_tiny_model(family=family, seed=4)
    fast = make_tiny_model(family=family, seed=4)
    assert speed.cache_position_encodings(fast) >= 1
    assert speed.cache_position_encodings(fast) >= 1  # idempotent: no wrapper around a wrapper
    size = int(plain.config.image_size)
    gen = torch.Generator().manual_seed(0)
    frames = [torch.randn(1, 3, size, size, generator=gen) for _ in range(2)]
    with torch.inference_mode():
        a = [plain.get_image_features(x) for x in frames]
        b = [fast.get_image_features(x) for x in frames]
    for x, y in zip(a, b):
        for p, q in zip(x.fpn_hidden_states, y.fpn_hidden_states):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
        for p, q in zip(x.fpn_position_encoding, y.fpn_position_encoding):
            torch.testing.assert_close(p, q, rtol=0, atol=0)
    # built once: the second frame's encodings are the first frame's tensors
    first, second = b[0].fpn_position_encoding[-1], b[1].fpn_position_encoding[-1]
    assert first.untyped_storage().data_ptr() == second.untyped_storage().data_ptr()
    assert fast.state_dict().keys() == plain.state_dict().keys()


def test_the_resized_hiera_embedding_is_built_once_and_follows_its_weights(monkeypatch):
    plain = make_tiny_model(seed=4)
    fast = make_tiny_model(seed=4)
    speed.cache_position_encodings(fast)
    calls = []
    resize = torch.nn.functional.interpolate
    monkeypatch.setattr(torch.nn.functional, "interpolate",
                        lambda x, *a, **k: calls.append(tuple(x.shape)) or resize(x, *a, **k))
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    backbone = fast.vision_encoder.backbone
    embed = tuple(backbone.pos_embed.shape)

    def features(net):
        with torch.inference_mode():
            return net.get_image_features(x).fpn_hidden_states

    def same(a, b):
        return all(torch.equal(p, q) for p, q in zip(a, b))

    assert same(features(fast), features(plain))
    assert same(features(fast), features(plain))
    assert calls.count(embed) == 3, "resized twice for the plain network, once for the other"
    with torch.no_grad():  # weights changed in place (a fine-tune step): a new embedding
        for net in (plain, fast):
            net.vision_encoder.backbone.pos_embed.mul_(1.5)
    assert same(features(fast), features(plain))
    assert calls.count(embed) == 5
    # with gradients (training) the cache stays out of the way
    backbone.pos_embed.grad = None
    out = fast.vision_encoder.backbone(x)
    out.last_hidden_state.sum().backward()
    assert backbone.pos_embed.grad is not None and calls.count(embed) == 6


def _masks(model, stack):
    session = Sam2Session(model, stack)
    session.add_points(0, 1, [[20, 24]], [1])
    return {f: m[1] for f, m in session.propagate("forward")}


def _stack():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:48, :56]
    return np.stack([(40 * rng.random((48, 56)) + 180 * (((yy - 20) ** 2 + (xx - 24 - i) ** 2) < 100))
                     for i in range(4)]).astype(np.uint8)


@needs_compile_time
def test_compiled_modules_give_the_same_masks():
    net = make_tiny_model(seed=5)
    reference = _masks(load_model(make_tiny_model(seed=5), device="cpu"), _stack())
    # the eager backend runs the compiler's graph capture without a C compiler: fast in CI
    model = load_model(net, device="cpu", compile={"backend": "eager", "dynamic": True})
    assert model.info["compiled"] is True
    assert net.vision_encoder._compiled_call_impl is not None
    assert model.info["fast_rotary"] == 0  # the compiler fuses transformers' own form
    got = _masks(model, _stack())
    for frame in reference:
        np.testing.assert_array_equal(got[frame], reference[frame], err_msg=f"frame {frame}")


@needs_compile_time
def test_a_failing_compiler_falls_back_with_a_warning():
    def broken(graph, example_inputs):
        raise RuntimeError("no working compiler here")

    net = make_tiny_model(seed=6)
    with pytest.warns(RuntimeWarning, match="torch.compile .* failed .*running them uncompiled"):
        model = load_model(net, device="cpu", compile={"backend": broken})
    assert model.info["compiled"] is False
    assert model.info["fast_rotary"] == 2 * net.config.memory_attention_num_layers  # eager again
    assert net.vision_encoder._compiled_call_impl is None and net.memory_attention._compiled_call_impl is None
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        got = _masks(model, _stack())
    reference = _masks(load_model(make_tiny_model(seed=6), device="cpu"), _stack())
    for frame in reference:
        np.testing.assert_array_equal(got[frame], reference[frame])


def test_bad_compile_argument():
    from napari_sam2.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="compile must be"):
        load_model(make_tiny_model(seed=0), device="cpu", compile="yes")


@pytest.mark.parametrize("dtype, channels", [
    ("uint8", None), ("uint16", None), ("int16", None), ("bool", None), ("uint16", [0, 2]),
])
def test_device_side_mapping_equals_the_host_mapping(dtype, channels):
    """The GPU path maps raw integer pixels on the device with the host's float32 arithmetic."""
    rng = np.random.default_rng(1)
    shape = (3, 40, 52) + ((3,) if channels else ())
    info = np.iinfo(dtype) if dtype != "bool" else None
    if info is None:
        frames = rng.random(shape) > 0.5
    else:
        frames = rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)
    source = FrameSource(frames, 64, channels=channels, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    for t in range(3):
        host = torch.from_numpy(source._mapped(t))
        device = source._mapped_on_device(t, torch.device("cpu"))
        assert device.dtype == torch.float32 and device.shape == host.shape
        torch.testing.assert_close(device, host, rtol=0, atol=0)


@pytest.mark.parametrize("family", ["sam2", "sam3"])
@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_fast_rotary_gives_the_memory_attention_of_transformers(family, autocast):
    plain = make_tiny_model(family=family, seed=7)
    fast = make_tiny_model(family=family, seed=7)
    layers = fast.config.memory_attention_num_layers
    assert speed.fast_rotary(fast) == 2 * layers  # self- and cross-attention of every layer
    assert speed.fast_rotary(fast) == 2 * layers  # idempotent
    assert fast.state_dict().keys() == plain.state_dict().keys()
    for memories, pointers in [(1, 0), (3, 8), (0, 4)]:  # no pointers, both, pointers only
        inputs = memory_attention_inputs(plain.config, memories=memories, pointers=pointers)
        with torch.inference_mode(), torch.autocast("cpu", dtype=autocast or torch.float32,
                                                     enabled=autocast is not None):
            want = plain.memory_attention(**inputs)
            got = fast.memory_attention(**inputs)
            again = fast.memory_attention(**inputs)  # tables kept from the first call
        assert got.dtype == want.dtype and got.shape == want.shape
        tol = 1e-5 if autocast is None else 2e-2
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
        torch.testing.assert_close(again, got, atol=0, rtol=0)


def test_plain_rotary_gives_transformers_form_back():
    net = make_tiny_model(seed=2)
    layers = net.config.memory_attention_num_layers
    assert speed.fast_rotary(net) == 2 * layers
    assert speed.plain_rotary(net) == 2 * layers
    assert not any("forward" in m.__dict__ for m in net.modules())
    assert speed.plain_rotary(net) == 0
    assert speed.fast_rotary(net) == 2 * layers  # and on again


def test_fast_rotary_leaves_edgetam_and_a_mismatching_rotation_alone(monkeypatch):
    assert speed.fast_rotary(make_tiny_model(family="edgetam", seed=1)) == 0

    def off_by_a_little(self, q, k, *args, **kwargs):
        return q + 1e-3, k

    monkeypatch.setattr(speed._ComplexRotary, "__call__", off_by_a_little)
    net = make_tiny_model(seed=1)
    assert speed.fast_rotary(net) == 0
    assert not any("forward" in m.__dict__ for m in net.modules())


def test_loaded_models_use_the_fast_rotary_and_give_the_same_masks():
    model = load_model(make_tiny_model(seed=8), device="cpu")
    assert model.info["fast_rotary"] == 2 * model.network.config.memory_attention_num_layers
    plain_net = make_tiny_model(seed=8)
    plain = load_model(plain_net, device="cpu")
    for module in plain_net.memory_attention.modules():  # back to transformers' forward
        module.__dict__.pop("forward", None)
    stack = _stack()
    got, want = _masks(model, stack), _masks(plain, stack)
    assert len(got) == len(want) == len(stack)
    for frame in want:
        assert got[frame].any()
        # the same rotations: at most a pixel or two may flip on float rounding at the threshold
        assert np.count_nonzero(got[frame] != want[frame]) <= 2, f"frame {frame}"


@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_lean_attention_gives_the_image_features_of_transformers_bit_for_bit(autocast):
    plain = make_tiny_model(seed=5)
    lean = make_tiny_model(seed=5)
    blocks = sum(type(m).__name__ == "Sam2MultiScaleAttention" for m in lean.modules())
    assert blocks > 0
    assert speed.lean_attention(lean) == blocks
    assert speed.lean_attention(lean) == blocks  # idempotent
    assert lean.state_dict().keys() == plain.state_dict().keys()
    pixels = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), torch.autocast("cpu", dtype=autocast or torch.float32,
                                                 enabled=autocast is not None):
        want = plain.vision_encoder(pixels)
        got = lean.vision_encoder(pixels)
    assert torch.equal(got.last_hidden_state, want.last_hidden_state)
    for a, b in zip(got.fpn_hidden_states, want.fpn_hidden_states):
        assert torch.equal(a, b)


def test_lean_attention_leaves_other_families_and_a_differing_copy_alone(monkeypatch):
    assert speed.lean_attention(make_tiny_model(family="sam3", seed=1)) == 0  # a ViT, no Hiera
    original = speed._lean_forward
    monkeypatch.setattr(speed, "_lean_forward", lambda self, x, **kw: original(self, x, **kw) + 1e-6)
    net = make_tiny_model(seed=1)
    assert speed.lean_attention(net) == 0
    assert not any("forward" in m.__dict__ for m in net.modules())


def test_plain_rotary_takes_the_lean_attention_away_too():
    net = make_tiny_model(seed=3)
    n = speed.lean_attention(net) + speed.fast_rotary(net)
    assert speed.plain_rotary(net) == n
    assert not any("forward" in m.__dict__ for m in net.modules())
    model = load_model(make_tiny_model(seed=3), device="cpu")
    assert model.info["lean_attention"] > 0
