"""Propagation copies each frame's results from the device to the host in one transfer.

On a GPU every copy to the host waits for the GPU to finish its queued work, so a frame with
many objects must not copy each mask, record and score on its own. On the CPU the same code
paths run: the test counts the calls that would copy to the host (or wait for the device)
while a propagation computes one frame.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from napari_sam2 import Sam2Session, load_model
from napari_sam2.testing import make_tiny_model

#: Calls that copy a tensor to the host (or wait for the device to answer).
_HOST_CALLS = {
    torch.Tensor.cpu: "cpu", torch.Tensor.numpy: "numpy", torch.Tensor.item: "item",
    torch.Tensor.tolist: "tolist", torch.Tensor.__float__: "float", torch.Tensor.__int__: "int",
    torch.Tensor.__bool__: "bool", torch.Tensor.__index__: "index", torch.Tensor.__array__: "array",
    torch.equal: "equal", torch.Tensor.equal: "equal", torch.allclose: "allclose",
    torch.Tensor.allclose: "allclose", torch.is_nonzero: "is_nonzero",
}
_HOST = torch.device("cpu")
_TRANSFORMERS = os.path.dirname(__import__("transformers").__file__)


def _caller_file() -> str:
    """The file of the innermost caller outside torch (who asked for the call)."""
    import sys

    f = sys._getframe(2)
    while f is not None and f"{os.sep}torch{os.sep}" in f.f_code.co_filename:
        f = f.f_back
    return "" if f is None else f.f_code.co_filename


class HostCalls(TorchFunctionMode):
    """Records the calls of ``_HOST_CALLS`` and ``Tensor.to`` the host.

    The model is given the device ``cpu:0`` (see ``_session``), so that moving a tensor to the
    model's device is not taken for a copy to the host. transformers' steps also move tensors
    with ``.to(x.device)`` of a tensor they meet, which is "cpu" here and the GPU on a GPU:
    those calls are not copies to the host and are not counted.
    """

    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _HOST_CALLS.get(func)
        if name is None and func is torch.Tensor.to:
            target = kwargs.get("device", args[1] if len(args) > 1 else None)
            if (isinstance(target, (str, torch.device)) and torch.device(target) == _HOST
                    and not _caller_file().startswith(_TRANSFORMERS)):
                name = "to(cpu)"
        if name is not None:
            self.calls.append(name)
        return func(*args, **kwargs)


def test_the_counter_counts():
    x = torch.ones(3)
    with HostCalls() as calls:
        x.tolist(), float(x[0]), x.numpy(), x.cpu(), x.to("cpu"), bool(x[0]), torch.equal(x, x)
        x.to(torch.device("cpu", 0))  # the model's device in these tests: not counted
    assert calls.calls == ["tolist", "float", "numpy", "cpu", "to(cpu)", "bool", "equal"]


def _session(family: str, batch_objects: bool) -> Sam2Session:
    net = make_tiny_model(family=family, seed=0)
    model = dataclasses.replace(load_model(net, device="cpu"), device=torch.device("cpu", 0))
    rng = np.random.default_rng(0)
    stack = (40 + 60 * rng.random((5, 64, 80))).astype(np.uint8)
    stack[:, 10:30, 10:30] += 120
    session = Sam2Session(model, stack, batch_objects=batch_objects)
    session.add_points(0, 1, [[20, 20]], [1])
    session.add_points(0, 2, [[45, 55]], [1])
    session.add_box(0, 3, [[5, 40], [25, 70]])
    seed = np.zeros(stack.shape[1:], bool)
    seed[35:55, 10:30] = True
    session.add_mask(0, 4, seed)  # a mask prompt: its frame's mask is the seed itself
    return session


@pytest.mark.parametrize(("family", "batch_objects"),
                         [("sam2", True), ("sam2", False), ("sam3", True), ("edgetam", True)])
def test_one_host_copy_per_propagated_frame(family, batch_objects):
    session = _session(family, batch_objects)
    list(session.propagate("forward"))
    # a correction on frame 2 puts object 1 in a batch of its own from there on
    session.add_points(2, 1, [[22, 22]], [0])
    per_frame = {}
    steps = session.propagate("forward")
    while True:
        with HostCalls() as calls:
            try:
                frame, masks = next(steps)
            except StopIteration:
                break
        per_frame[frame] = calls.calls
        assert sorted(masks) == [1, 2, 3, 4]
        assert all(m.dtype == bool and m.shape == session.frame_shape for m in masks.values())
    assert sorted(per_frame) == [0, 1, 2, 3, 4]
    assert all(len(c) <= 1 for c in per_frame.values()), per_frame
