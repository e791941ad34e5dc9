"""Working ahead changes nothing in the results: same masks, each frame read once, errors kept."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from napari_sam2 import Sam2Session
from napari_sam2.errors import Sam2InputError


class SlowStack:
    """A lazy stack that takes a while per frame (like a video decoder) and counts its reads.

    It refuses to be read from two threads at once, as some decoders do.
    """

    def __init__(self, frames, delay=0.01):
        self._frames = frames
        self.shape, self.dtype, self.ndim = frames.shape, frames.dtype, frames.ndim
        self.delay = delay
        self.reads: list[int] = []
        self._busy = threading.Lock()

    def __getitem__(self, t):
        if not self._busy.acquire(blocking=False):
            raise RuntimeError("read from two threads at once")
        try:
            time.sleep(self.delay)
            self.reads.append(int(t))
            return self._frames[t]
        finally:
            self._busy.release()


def _stack(n=7, h=40, w=52, seed=2):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    frames = [40 * rng.random((h, w)) + 170 * (((yy - 18 - i) ** 2 + (xx - 20 - i) ** 2) < 81)
              for i in range(n)]
    return np.stack(frames).astype(np.uint8)


def _run(session):
    out = [session.add_points(2, 1, [[20, 22]], [1]), session.add_points(4, 2, [[30, 30]], [1])]
    frames = []
    for frame, masks in session.propagate("both"):
        frames.append(frame)
        out += [masks.get(1), masks.get(2)]
    return frames, out


@pytest.fixture(scope="module")
def reference(tiny_model):
    """Frames and masks of the plain session (no prefetch, no batching, no disk)."""
    return _run(Sam2Session(tiny_model, _stack()))


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert (x is None) == (y is None)
        if x is not None:
            np.testing.assert_array_equal(x, y)


def test_prefetch_gives_identical_masks_and_reads_each_frame_once(tiny_model, reference):
    stack = _stack()
    ref_frames, ref = reference
    slow = SlowStack(stack)
    session = Sam2Session(tiny_model, slow, prefetch=3)
    auto_contrast_reads = len(slow.reads)
    frames, out = _run(session)
    assert frames == ref_frames
    _same(out, ref)
    # clicks read frames 2 and 4; propagation reads the others, once each
    reads = slow.reads[auto_contrast_reads:]
    assert sorted(reads) == list(range(len(stack))), reads
    assert not any(t.name == "sam2-prefetch" for t in threading.enumerate()), "the worker ends with the plan"


def test_cancelled_propagation_leaves_a_usable_session(tiny_model):
    stack = _stack()
    session = Sam2Session(tiny_model, SlowStack(stack), prefetch=2)
    session.add_points(0, 1, [[20, 22]], [1])
    for frame, _ in session.propagate("forward"):
        if frame == 3:
            break
    rest = dict(session.propagate("forward", start=3))
    ref = Sam2Session(tiny_model, stack)
    ref.add_points(0, 1, [[20, 22]], [1])
    expected = dict(ref.propagate("forward"))
    for frame, masks in rest.items():
        np.testing.assert_array_equal(masks[1], expected[frame][1])


def test_prefetch_with_disk_cache_loads_features_ahead(tiny_model, tmp_path, reference):
    stack = _stack()
    _, ref = reference
    first = Sam2Session(tiny_model, stack, disk_cache=tmp_path)
    _same(_run(first)[1], ref)
    first.cache.store.flush()
    slow = SlowStack(stack)
    second = Sam2Session(tiny_model, slow, disk_cache=tmp_path, prefetch=3)
    _, out = _run(second)
    _same(out, ref)
    assert second.cache.misses == 0 and second.cache.disk_hits == len(stack)


def test_an_unreadable_frame_fails_where_it_is_tracked(tiny_model):
    stack = _stack().astype(np.float32)
    stack[5] = np.nan
    session = Sam2Session(tiny_model, stack, prefetch=3, contrast=(0, 255))
    session.add_points(2, 1, [[20, 22]], [1])
    seen = []
    with pytest.raises(Sam2InputError, match="frame 5 holds no finite value"):
        for frame, _ in session.propagate("forward"):
            seen.append(frame)
    assert seen == [2, 3, 4]


def test_batched_encoding_matches_one_frame_at_a_time(tiny_model, monkeypatch, reference):
    stack = _stack()
    _, ref = reference
    calls = []
    real = tiny_model.get_image_features
    monkeypatch.setattr(tiny_model, "get_image_features",
                        lambda x, **kw: calls.append(len(x)) or real(x, **kw))
    session = Sam2Session(tiny_model, stack, encode_batch=3, cache_frames=8)
    _, out = _run(session)
    assert max(calls) > 1 and sum(calls) == len(stack), calls
    # a batch may change the last float bits of the features, rarely a mask pixel on the edge
    differing = sum(int((x != y).sum()) for x, y in zip(out, ref) if x is not None)
    total = sum(x.size for x in ref if x is not None)
    assert differing <= 1e-3 * total
    single = Sam2Session(tiny_model, stack)
    with torch.inference_mode():
        for f in (0, 1):  # encoded together
            one = real(single.source.model_input(f)[None]).fpn_hidden_states
            for a, b in zip(one, session.cache._features[f]["vision_feats"]):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_prefetch_needs_a_cache_that_holds_what_it_prepares(tiny_model):
    with pytest.raises(Sam2InputError, match="raise cache_frames"):
        Sam2Session(tiny_model, _stack(), prefetch=8, cache_frames=8)
