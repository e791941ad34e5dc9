"""Image features are computed once: reused from memory and from disk, never used when stale."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from napari_sam2 import Sam2Session
from napari_sam2.engine.cache import FeatureCache


def _stack(n=8, h=40, w=52, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for i in range(n):
        disc = ((yy - 18 - i) ** 2 + (xx - 20 - i) ** 2) < 9 ** 2
        frames.append(40 * rng.random((h, w)) + 170 * disc)
    return np.stack(frames).astype(np.uint8)


def _track(session, frame=2):
    """Click, propagate both ways: every mask and score, in order."""
    out = [session.add_points(frame, 1, [[20, 22]], [1])]
    for _, masks in session.propagate("both"):
        out.append(masks[1])
    return out


class CountingEncoder:
    """Counts the network's image-encoder runs (wraps the real method, which still runs)."""

    def __init__(self, network, monkeypatch):
        self.calls = 0
        real = network.get_image_features

        def counted(*args, **kwargs):
            self.calls += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(network, "get_image_features", counted)


def test_clicks_and_repropagation_reuse_features(tiny_model, monkeypatch):
    stack = _stack()
    enc = CountingEncoder(tiny_model, monkeypatch)
    session = Sam2Session(tiny_model, stack, cache_frames=len(stack))
    session.add_points(2, 1, [[20, 22]], [1])
    session.add_points(2, 1, [[30, 40]], [0])  # refinement click
    session.add_points(2, 2, [[10, 10]], [1])  # another object, same frame
    assert enc.calls == 1, "clicks on one frame run the image encoder once"
    list(session.propagate("forward"))
    assert enc.calls == len(stack) - 2
    session.add_points(5, 1, [[24, 26]], [0])  # a correction on a tracked frame
    list(session.propagate("forward", start=5))
    assert enc.calls == len(stack) - 2, "re-propagation after a correction reuses the features"


def test_lru_bound_and_one_shared_copy_of_position_encodings(tiny_model):
    stack = _stack()
    session = Sam2Session(tiny_model, stack, cache_frames=3)
    session.add_points(0, 1, [[20, 22]], [1])
    list(session.propagate("forward"))
    cache = session.cache
    assert len(cache) == 3 and list(cache._features) == [5, 6, 7]
    first, last = (cache._features[f] for f in (5, 7))
    # the position encodings depend on the feature size only: one copy for all frames
    assert all(a is b for a, b in zip(first["vision_pos_embeds"], last["vision_pos_embeds"]))
    assert not torch.equal(first["vision_feats"][-1], last["vision_feats"][-1])
    # the least recently used frame goes first, not the lowest index
    cache.get_vision_features(5)
    cache.cache_vision_features(1, dict(first))
    assert list(cache._features) == [7, 5, 1]


def test_disk_cache_round_trip_gives_identical_features_and_masks(tiny_model, tmp_path, monkeypatch):
    stack = _stack()
    plain = _track(Sam2Session(tiny_model, stack))

    first = Sam2Session(tiny_model, stack, disk_cache=tmp_path, cache_frames=len(stack))
    for a, b in zip(_track(first), plain):
        np.testing.assert_array_equal(a, b)
    first.cache.store.flush()
    assert first.cache.store.writes == len(stack)
    computed = {f: first.cache._features.get(f) for f in range(len(stack))}

    enc = CountingEncoder(tiny_model, monkeypatch)
    second = Sam2Session(tiny_model, stack, disk_cache=tmp_path)
    again = _track(second)
    assert enc.calls == 0, "a stack seen before is never encoded again"
    assert second.cache.disk_hits == len(stack) and second.cache.misses == 0
    for a, b in zip(again, plain):
        np.testing.assert_array_equal(a, b)
    for f, feats in computed.items():
        loaded = second.cache.store.load(f)
        for key in ("vision_feats", "vision_pos_embeds"):
            for x, y in zip(feats[key], loaded[key]):
                assert x.shape == y.shape and x.dtype == y.dtype and torch.equal(x, y)


def test_stale_entries_are_never_used(tiny_model, tmp_path, monkeypatch):
    stack = _stack()
    first = Sam2Session(tiny_model, stack, disk_cache=tmp_path)
    first.add_points(0, 1, [[20, 22]], [1])
    list(first.propagate("forward"))
    first.cache.store.flush()

    # one frame edited in place (same shape, dtype and contrast): only that frame is recomputed
    edited = stack.copy()
    edited[3, 5:15, 5:15] = 255
    session = Sam2Session(tiny_model, edited, contrast=tuple(first.contrast), disk_cache=tmp_path)
    assert session.cache.store.path == first.cache.store.path
    enc = CountingEncoder(tiny_model, monkeypatch)
    ours = [session.add_points(0, 1, [[20, 22]], [1])] + [m[1] for _, m in session.propagate("forward")]
    assert enc.calls == 1 and session.cache.disk_hits == len(stack) - 1
    reference = Sam2Session(tiny_model, edited, contrast=tuple(first.contrast))
    theirs = [reference.add_points(0, 1, [[20, 22]], [1])] + [m[1] for _, m in reference.propagate("forward")]
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)

    # other contrast limits or another network: another store, nothing reused
    other_contrast = Sam2Session(tiny_model, stack, contrast=(0, 100), disk_cache=tmp_path)
    assert other_contrast.cache.store.path != first.cache.store.path
    assert not other_contrast.cache.has(0)
    from napari_sam2.testing import make_tiny_model

    other_weights = Sam2Session(make_tiny_model(256, seed=1), stack, disk_cache=tmp_path)
    assert other_weights.cache.store.path != first.cache.store.path
    assert other_weights.cache.store.load(0) is None


def test_broken_disk_cache_does_not_stop_tracking(tiny_model, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    stack = _stack()
    with caplog.at_level(logging.WARNING, logger="napari_sam2.engine.cache"):
        session = Sam2Session(tiny_model, stack, disk_cache=blocker)
        masks = _track(session)
    assert not session.cache.store.enabled
    assert "feature store" in caplog.text
    for a, b in zip(masks, _track(Sam2Session(tiny_model, stack))):
        np.testing.assert_array_equal(a, b)


def test_cache_needs_room_for_one_frame():
    with pytest.raises(ValueError, match="at least one frame"):
        FeatureCache(0)


def _flip_bits(path):
    """Flip one byte in the middle of a stored chunk file (a bad sector, a bit rot)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _chunk_files(store_path, array):
    files = sorted(p for p in (store_path / array).rglob("*")
                   if p.is_file() and not p.name.startswith((".", "zarr")))
    assert files, f"no chunk file for {array} in {store_path}"
    return files


def test_damaged_frame_chunk_is_recomputed_and_logged(tiny_model, tmp_path, monkeypatch, caplog):
    stack = _stack()
    plain = _track(Sam2Session(tiny_model, stack))
    first = Sam2Session(tiny_model, stack, disk_cache=tmp_path, cache_frames=len(stack))
    _track(first)
    first.cache.store.flush()
    store_path = first.cache.store.path
    frame_chunks = _chunk_files(store_path, "frames")
    assert len(frame_chunks) == len(stack)
    _flip_bits(frame_chunks[3])  # frames/c/3/0: frame 3's features

    enc = CountingEncoder(tiny_model, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="napari_sam2.engine.cache"):
        second = Sam2Session(tiny_model, stack, disk_cache=tmp_path)
        masks = _track(second)
    assert enc.calls == 1, "only the damaged frame is encoded again"
    assert second.cache.store.damaged == [3]
    assert "frame 3's stored features fail their checksum" in caplog.text
    assert "recomputing frame 3" in caplog.text
    for a, b in zip(masks, plain):
        np.testing.assert_array_equal(a, b)
    second.cache.store.flush()  # the recomputed frame was written back: the store is whole again
    third = Sam2Session(tiny_model, stack, disk_cache=tmp_path)
    _track(third)
    assert enc.calls == 1 and third.cache.store.damaged == []


def test_damaged_position_encodings_are_recomputed_and_rewritten(tiny_model, tmp_path, monkeypatch, caplog):
    stack = _stack()
    plain = _track(Sam2Session(tiny_model, stack))
    first = Sam2Session(tiny_model, stack, disk_cache=tmp_path, cache_frames=len(stack))
    _track(first)
    first.cache.store.flush()
    shared = sorted(p.name for p in first.cache.store.path.iterdir()
                    if p.name.startswith("vision_pos_embeds_"))
    assert shared
    _flip_bits(_chunk_files(first.cache.store.path, shared[-1])[0])

    enc = CountingEncoder(tiny_model, monkeypatch)
    with caplog.at_level(logging.WARNING, logger="napari_sam2.engine.cache"):
        second = Sam2Session(tiny_model, stack, disk_cache=tmp_path)
        masks = _track(second)
        second.cache.store.flush()
    assert "fail their checksum" in caplog.text
    assert "rewrote the damaged shared vision_pos_embeds" in caplog.text
    assert enc.calls >= 1 and second.cache.store.enabled
    for a, b in zip(masks, plain):
        np.testing.assert_array_equal(a, b)  # never the damaged encodings: masks are exact
    caplog.clear()
    calls = enc.calls
    with caplog.at_level(logging.WARNING, logger="napari_sam2.engine.cache"):
        third = Sam2Session(tiny_model, stack, disk_cache=tmp_path)
        again = _track(third)
    assert "checksum" not in caplog.text
    for a, b in zip(again, plain):
        np.testing.assert_array_equal(a, b)
    # frames loaded from disk with the repaired encodings
    assert third.cache.disk_hits >= 1 and enc.calls - calls < len(stack)
