"""Devices and arithmetic precision: where a model runs and in which precision it computes.

:func:`resolve_device` turns ``"auto"``, ``"cuda"``, ``"mps"`` or ``"cpu"`` into a device that
exists; :func:`autocast_dtype` the ``dtype`` argument of ``load_model`` into the autocast
precision the device can run. A device may *run* a precision it has no arithmetic for: a CPU
without AVX-512 BF16 or AMX computes bfloat16 (and float16) by converting every value to
float32 and back, about nine times slower than float32 (docs/performance.md).
:func:`precision_note` says so where a user asks for it, and :func:`replay_precision` keeps a
session file made on a GPU (in bfloat16) from replaying that slowly on such a CPU.
Every failure is a :class:`~napari_sam2.errors.ModelLoadError` that says what to do about it.
"""

from __future__ import annotations

import platform

import torch

from napari_sam2.errors import ModelLoadError, one_line

__all__ = ["resolve_device", "check_precision", "autocast_dtype", "native_precision", "precision_note",
           "replay_precision"]


def is_auto(device) -> bool:
    """Whether ``device`` asks for the best device there is (``None`` or ``"auto"``)."""
    return device is None or (isinstance(device, str) and device.strip().lower() == "auto")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``"cuda"``/``"mps"``/``"cpu"`` into an available ``torch.device``.

    Raises
    ------
    ModelLoadError
        When the requested device does not exist on this machine.
    """
    if is_auto(device):
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    assert device is not None  # None is "auto" (above)
    try:
        dev = torch.device(device.strip().lower() if isinstance(device, str) else device)
    except (RuntimeError, TypeError) as err:
        raise ModelLoadError(
            f"unknown device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"
        ) from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = ("this PyTorch build has no CUDA support" if torch.version.cuda is None
                   else "PyTorch finds no usable NVIDIA GPU or driver")
            raise ModelLoadError(
                f"device {device!r} was requested but {why}; choose device 'auto' (or 'cpu'), or "
                "install a CUDA build of PyTorch on a machine with an NVIDIA GPU"
            )
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise ModelLoadError(f"device={device!r} does not exist: this machine has {count} CUDA device(s)")
        return torch.device("cuda", dev.index if dev.index is not None else torch.cuda.current_device())
    if dev.type == "mps":
        if not _mps_available():
            raise ModelLoadError(
                f"device {device!r} was requested but Apple's MPS backend is not available "
                "(it needs an Apple-silicon Mac); choose device 'auto' or 'cpu'"
            )
        return dev
    if dev.type == "cpu":
        return torch.device("cpu")
    raise ModelLoadError(f"unsupported device {device!r}: use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


_DTYPES = {
    "float32": None, "fp32": None, "float": None,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def check_precision(dtype, device: str | torch.device | None = "auto") -> None:
    """Check that ``device`` can run ``dtype`` (``load_model``'s argument) before loading anything.

    Raises
    ------
    ModelLoadError
        With the reason: an unknown precision, a device that does not exist or cannot autocast
        in that precision.
    """
    autocast_dtype(dtype, resolve_device(device))


def autocast_dtype(dtype, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for :meth:`Sam2Model.inference` (None: plain float32).

    Raises
    ------
    ModelLoadError
        For an unknown dtype, or one the device cannot autocast in (with the reason).
    """
    if dtype is None or (isinstance(dtype, str) and dtype.lower() == "auto"):
        # SAM 2 was trained in bfloat16; older GPUs (no bfloat16) stay float32 unless asked
        if device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False):
            return torch.bfloat16
        return None
    key = str(dtype).lower().replace("torch.", "")
    if key not in _DTYPES:
        raise ModelLoadError(f"unsupported dtype {dtype!r}: use None, 'float32', 'bfloat16' or 'float16'")
    chosen = _DTYPES[key]
    if chosen is None:
        return None
    if (device.type == "cuda" and chosen == torch.bfloat16
            and not torch.cuda.is_bf16_supported(including_emulation=False)):
        name = torch.cuda.get_device_name(device)
        raise ModelLoadError(
            f"dtype='bfloat16' was requested but {name} has no bfloat16 arithmetic (it needs an "
            "NVIDIA Ampere GPU or newer): use dtype='float16' or 'float32'"
        )
    import warnings

    # torch does not raise for a dtype a device cannot autocast in: it warns and runs float32
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.autocast(device.type, dtype=chosen):
            pass
    refused = [w for w in caught if "autocast" in str(w.message).lower()]
    if refused:
        raise ModelLoadError(
            f"dtype={key!r} cannot be used on {device.type}: {str(refused[0].message).strip()} "
            "Use dtype='float32' (or another precision this device supports)."
        )
    return chosen


def native_precision(dtype: torch.dtype | None, device: torch.device) -> bool | None:
    """Whether ``device`` has arithmetic units for ``dtype`` (``None``: cannot tell).

    Float32 always; on CUDA whatever autocast accepts (older GPUs are refused earlier). On an
    x86 CPU: bfloat16 with AVX-512 BF16 or AMX, float16 with AMX-FP16 (without them torch
    converts to float32 and back around every operation); other CPUs as oneDNN reports them.
    """
    if dtype is None or dtype == torch.float32 or device.type != "cpu":
        return True
    if platform.machine().lower() in _X86:  # the CPU's own feature flags, as torch reads them
        names = {torch.bfloat16: ("_is_avx512_bf16_supported", "_is_amx_tile_supported"),
                 torch.float16: ("_is_amx_fp16_supported",)}.get(dtype, ())
        return any(getattr(torch.cpu, name, lambda: False)() for name in names)
    # elsewhere (Arm CPUs with BF16 instructions, say) oneDNN's view, where torch has it
    probe = {torch.bfloat16: "_is_mkldnn_bf16_supported",
             torch.float16: "_is_mkldnn_fp16_supported"}.get(dtype)
    try:
        return bool(getattr(torch.ops.mkldnn, probe)()) if probe else None
    except (AttributeError, RuntimeError):
        return None


_X86 = {"x86_64", "amd64", "i386", "i686", "x86"}


def precision_note(dtype, device: str | torch.device | None = "auto") -> str | None:
    """A warning when ``device`` computes ``dtype`` without arithmetic units for it.

    ``dtype`` is ``load_model``'s argument. The warning says what to choose instead; ``None``
    when the precision suits the device.
    """
    emulated = _emulated(dtype, device)
    if emulated is None:
        return None
    name = str(emulated).replace("torch.", "")
    return (f"this CPU has no {name} arithmetic ({_units(emulated)}): {name} runs emulated, about "
            "9x slower than float32; choose precision float32 (or auto)")


def _emulated(dtype, device: str | torch.device | None) -> torch.dtype | None:
    """The autocast precision ``device`` would compute ``dtype`` in without its units, or None."""
    device = resolve_device(device)
    chosen = autocast_dtype(dtype, device)
    if chosen is None or native_precision(chosen, device) is not False:
        return None
    return chosen


def _units(dtype: torch.dtype) -> str:
    """The CPU units that would compute ``dtype`` natively, as a user would look them up."""
    if platform.machine().lower() in _X86:
        return "AVX-512 BF16 or AMX units" if dtype == torch.bfloat16 else "AMX-FP16 units"
    return f"{str(dtype).replace('torch.', '')} instructions"


def replay_precision(recorded: str | None, otherwise: str,
                     device: str | torch.device | None = "auto") -> tuple[str, str | None]:
    """The precision a replayed session runs in, and a note when it is not the recorded one.

    A replay computes in the precision the session was made in (``recorded``, from its file), so
    that it gives the same masks, unless this device cannot run that precision, or computes it
    without arithmetic units for it (a session made on a GPU in bfloat16, replayed on a laptop's
    CPU: the masks within about 1 % of float32's, nine times slower): then in ``otherwise``.

    Returns
    -------
    (precision, note)
        ``note`` is None when the recorded precision is used (or none was recorded).
    """
    if recorded is None:
        return otherwise, None
    try:
        emulated = _emulated(recorded, device)
    except ModelLoadError as err:
        return otherwise, (f"the session was made in {recorded}, which this device cannot run "
                           f"({one_line(err)}); running in {otherwise} instead")
    if emulated is None:
        return recorded, None
    return otherwise, (f"the session was made in {recorded}, which this CPU computes about 9x slower "
                       f"than float32 (it has no {_units(emulated)}); running in {otherwise} instead, masks "
                       f"within about 1 % of {recorded}'s")
