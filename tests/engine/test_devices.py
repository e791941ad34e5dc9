"""Which precision a device computes natively, and what a replay and a user's choice are told."""

from __future__ import annotations

import pytest
import torch

from napari_sam2.engine import devices, models
from napari_sam2.errors import ModelLoadError

CPU = torch.device("cpu")


@pytest.fixture
def cpu_units(monkeypatch):
    """Set the CPU features torch reports: ``cpu_units(avx512_bf16=..., amx=..., mkldnn_bf16=...)``."""

    def set_units(avx512_bf16=False, amx=False, amx_fp16=False, mkldnn_bf16=False, mkldnn_fp16=False,
                  machine="x86_64"):
        monkeypatch.setattr(devices.platform, "machine", lambda: machine)
        for name, value in [("_is_avx512_bf16_supported", avx512_bf16), ("_is_amx_tile_supported", amx),
                            ("_is_amx_fp16_supported", amx_fp16)]:
            monkeypatch.setattr(torch.cpu, name, lambda v=value: v, raising=False)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn_bf16,
                            raising=False)
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_fp16_supported", lambda: mkldnn_fp16,
                            raising=False)

    return set_units


def test_float32_and_gpus_are_always_native(cpu_units):
    cpu_units()
    assert devices.native_precision(None, CPU) and devices.native_precision(torch.float32, CPU)
    assert devices.native_precision(torch.bfloat16, torch.device("cuda", 0))


@pytest.mark.parametrize(("units", "bf16", "fp16"), [
    ({}, False, False),                                  # AVX2 only (this project's CI machine)
    ({"avx512_bf16": True}, True, False),                # Intel Cooper Lake, AMD Zen 4
    ({"amx": True}, True, False),                        # Intel Sapphire Rapids and newer
    ({"amx": True, "amx_fp16": True}, True, True),       # Intel Granite Rapids
    ({"mkldnn_bf16": True}, False, False),               # x86: oneDNN's emulation does not count
    ({"mkldnn_bf16": True, "machine": "aarch64"}, True, False),  # an Arm CPU with BF16
    ({"amx": True, "machine": "aarch64"}, False, False),          # Arm: oneDNN's view only
])
def test_a_cpu_computes_half_precision_natively_only_with_its_units(cpu_units, units, bf16, fp16):
    cpu_units(**units)
    assert devices.native_precision(torch.bfloat16, CPU) is bf16
    assert devices.native_precision(torch.float16, CPU) is fp16


def test_precision_note_warns_of_emulated_arithmetic_only(cpu_units):
    cpu_units()
    note = devices.precision_note("bfloat16", "cpu")
    assert note.startswith("this CPU has no bfloat16 arithmetic (AVX-512 BF16 or AMX units)")
    assert "9x slower than float32" in note and "choose precision float32" in note
    assert "AMX-FP16" in devices.precision_note("float16", "cpu")
    for fine in ("auto", "float32", None):
        assert devices.precision_note(fine, "cpu") is None
    cpu_units(amx=True)
    assert devices.precision_note("bfloat16", "cpu") is None
    with pytest.raises(ModelLoadError, match="unsupported dtype 'int8'"):
        devices.precision_note("int8", "cpu")


def test_a_replay_keeps_its_precision_where_the_device_computes_it(cpu_units):
    cpu_units(amx=True)
    assert devices.replay_precision("bfloat16", "auto", "cpu") == ("bfloat16", None)
    assert devices.replay_precision(None, "float32", "cpu") == ("float32", None)
    cpu_units()
    assert devices.replay_precision("float32", "auto", "cpu") == ("float32", None)
    chosen, note = devices.replay_precision("bfloat16", "float32", "cpu")
    assert chosen == "float32"
    assert note == ("the session was made in bfloat16, which this CPU computes about 9x slower than "
                    "float32 (it has no AVX-512 BF16 or AMX units); running in float32 instead, masks "
                    "within about 1 % of bfloat16's")
    chosen, note = devices.replay_precision("half-ish", "auto", "cpu")  # a hand-edited file
    assert chosen == "auto" and "the session was made in half-ish, which this device cannot run" in note
    assert "unsupported dtype 'half-ish'" in note


def test_models_still_offers_the_device_functions():
    assert models.resolve_device("cpu") == CPU and models.resolve_device is devices.resolve_device
    models.check_precision("bfloat16", "cpu")  # runs (slowly on some CPUs): not refused
    with pytest.raises(ModelLoadError, match="unknown device 'gpu9'"):
        models.check_precision("float32", "gpu9")
