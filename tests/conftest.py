"""Shared fixtures: small random SAM 2 models and stacks, no network, GUI tests only with a display."""

from __future__ import annotations

import os
import sys

# No test may reach the network: the hub client refuses to download anything.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import threading
import time

import numpy as np
import pytest

#: threads the engine starts for a piece of work and ends with it (engine/prefetch.py, engine/cache.py)
ENGINE_THREADS = ("sam2-prefetch", "sam2-feature-store")
#: how long such a thread may take, once its work is stopped, to finish the frame it is on
ENGINE_THREAD_GRACE_S = 10.0


def _has_display() -> bool:
    if sys.platform in ("win32", "darwin"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def pytest_collection_modifyitems(config, items):
    if _has_display():
        return
    skip = pytest.mark.skip(reason="needs a display: run the GUI tests under Xvfb (xvfb-run -a pytest)")
    for item in items:
        uses_viewer = "make_napari_viewer" in getattr(item, "fixturenames", ())
        if "_qt" in item.path.parts or uses_viewer or item.get_closest_marker("gui"):
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _no_engine_thread_left_running():
    """Fail a test that leaves a prefetch or feature-store thread running.

    An idle session holds no thread: a propagation that is closed (or runs to its end) stops
    its prefetcher, and the feature store's writer ends when its queue is empty. A thread still
    there after the test means a propagation left open or a store never drained, which in the
    dock or a batch run would keep reading frames or holding memory.
    """
    def engine_threads():
        return [t for t in threading.enumerate() if t.name.startswith(ENGINE_THREADS)]

    before = set(engine_threads())
    yield
    deadline = time.monotonic() + ENGINE_THREAD_GRACE_S
    started = [t for t in engine_threads() if t not in before]
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    running = [t.name for t in started if t.is_alive()]
    assert not running, (f"the test left {running} running: close the propagation it started "
                         "(generator.close(), or run it to its end) or flush its feature store")


@pytest.fixture(scope="session", autouse=True)
def _torch_threads():
    import torch

    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_model():
    """A random-initialised SAM 2.1 network at 256 px (shared: do not modify its weights)."""
    from napari_sam2.testing import make_tiny_model

    return make_tiny_model(image_size=256, seed=0)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The same tiny network saved as a transformers folder (config.json + safetensors)."""
    from napari_sam2.testing import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("tiny-sam2"), image_size=256, seed=0)


@pytest.fixture(scope="session")
def blobs_stack():
    """(8, 96, 112) uint8 stack of a bright disc drifting over a textured background."""
    rng = np.random.default_rng(1)
    t, h, w = 8, 96, 112
    yy, xx = np.mgrid[:h, :w]
    frames = []
    for i in range(t):
        cy, cx = 40 + 2 * i, 45 + 3 * i
        disc = ((yy - cy) ** 2 + (xx - cx) ** 2) < 15 ** 2
        img = 40 + 20 * rng.random((h, w)) + 150 * disc
        frames.append(img)
    return np.clip(np.stack(frames), 0, 255).astype(np.uint8)
