"""The memory attention's first layer computes its frame-only part once for a batch of objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _memory_inputs import memory_attention_inputs

from napari_sam2 import Sam2Session, load_model
from napari_sam2.engine import shared_query, speed
from napari_sam2.testing import make_tiny_model


def _inputs(config, objects=5, expanded=True, **kw):
    """A propagated frame's inputs: the frame's features (one for all objects), memories, pointers."""
    return memory_attention_inputs(config, objects=objects, expanded=expanded, **kw)


def _first_layer_batches(network) -> list[int]:
    """Records the batch size the first layer's self-attention sees at each call."""
    seen: list[int] = []
    network.memory_attention.layers[0].layer_norm1.register_forward_hook(
        lambda module, args, out: seen.append(args[0].shape[0]))
    return seen


@pytest.mark.parametrize("family", ["sam2", "sam3"])
@pytest.mark.parametrize("autocast", [None, torch.bfloat16])
def test_the_shared_first_layer_gives_the_memory_attention_of_transformers(family, autocast):
    plain = make_tiny_model(family=family, seed=4)
    shared = make_tiny_model(family=family, seed=4)
    assert shared_query.share_first_layer(shared) == 1
    assert shared_query.share_first_layer(shared) == 1  # idempotent
    seen = _first_layer_batches(shared)
    for memories, pointers in [(1, 0), (3, 8), (0, 4)]:  # no pointers, both, pointers only
        inputs = _inputs(plain.config, memories=memories, pointers=pointers)
        with torch.inference_mode(), torch.autocast("cpu", dtype=autocast or torch.float32,
                                                     enabled=autocast is not None):
            want = plain.memory_attention(**inputs)
            got = shared.memory_attention(**inputs)
        assert got.dtype == want.dtype and got.shape == want.shape == (1, 5, *want.shape[2:])
        tol = 1e-5 if autocast is None else 1e-2
        torch.testing.assert_close(got, want, atol=tol, rtol=tol)
    assert seen == [1, 1, 1]  # the frame's part ran once per call, not once per object


def test_objects_with_their_own_features_run_transformers_forward():
    plain = make_tiny_model(seed=4)
    shared = make_tiny_model(seed=4)
    shared_query.share_first_layer(shared)
    seen = _first_layer_batches(shared)
    for inputs in [_inputs(plain.config, expanded=False), _inputs(plain.config, objects=1)]:
        with torch.inference_mode():
            assert torch.equal(shared.memory_attention(**inputs), plain.memory_attention(**inputs))
    assert seen == [5, 1]


def test_other_forms_and_a_differing_copy_are_left_alone(monkeypatch):
    edgetam = make_tiny_model(family="edgetam", seed=1)
    assert shared_query.share_first_layer(edgetam) == 0
    assert "forward" not in edgetam.memory_attention.__dict__
    original = shared_query._forward
    monkeypatch.setattr(shared_query, "_forward", lambda self, *a, **k: original(self, *a, **k) + 1e-3)
    net = make_tiny_model(seed=1)
    assert shared_query.share_first_layer(net) == 0
    assert "forward" not in net.memory_attention.__dict__


def test_loaded_models_share_it_and_plain_rotary_takes_it_away():
    model = load_model(make_tiny_model(seed=3), device="cpu")
    assert model.info["shared_first_layer"] == 1
    assert shared_query.has_shared_first_layer(model.network.memory_attention)
    assert speed.plain_rotary(model.network) > 0
    assert not any("forward" in m.__dict__ for m in model.network.modules())


def test_batched_tracking_with_the_shared_first_layer_equals_one_object_at_a_time():
    model = load_model(make_tiny_model(seed=6), device="cpu")
    assert model.info["shared_first_layer"] == 1
    seen = _first_layer_batches(model.network)
    rng = np.random.default_rng(2)
    yy, xx = np.mgrid[:64, :80]

    def disc(k, t):  # six cells on a grid, drifting right
        return ((yy - 16 - 16 * (k // 3)) ** 2 + (xx - 14 - 24 * (k % 3) - t) ** 2) < 36

    stack = np.stack([40 * rng.random((64, 80)) + sum(200 * disc(k, t) for k in range(6))
                      for t in range(5)]).astype(np.uint8)
    labels = np.zeros((64, 80), np.uint16)
    for k in range(6):
        labels[disc(k, 0)] = 10 + k
    results, calls = {}, {}
    for batched in (True, False):
        session = Sam2Session(model, stack, batch_objects=batched, max_batch=6)
        ids = session.add_label_image(0, labels)
        seen.clear()
        results[batched] = {f: {i: m[i].copy() for i in ids} for f, m in session.propagate("forward")}
        calls[batched] = list(seen)
    # four tracked frames: one group of six objects each, whose frame-only part ran once
    assert calls == {True: [1] * 4, False: [1] * 24}
    for frame, masks in results[False].items():
        assert masks.keys() == results[True][frame].keys()
        for obj, mask in masks.items():
            assert np.count_nonzero(mask != results[True][frame][obj]) <= 2, (frame, obj)
    assert any(m.any() for masks in results[True].values() for m in masks.values())
