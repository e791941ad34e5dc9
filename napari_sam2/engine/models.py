"""Loading video models: short names, hub ids, local folders, Meta ``.pt`` checkpoints.

:class:`Sam2Model` is what a :class:`~napari_sam2.engine.session.Sam2Session` runs: the
transformers network (SAM 2 / 2.1, SAM 3's tracker or EdgeTAM, see
:mod:`napari_sam2.engine.families`), the device it lives on, its preprocessing and how to enter
inference mode (and mixed precision) on it.
:func:`load_model` builds one from any of the places SAM 2 weights come from; hub downloads go
through ``huggingface_hub`` into the normal Hugging Face cache, Meta checkpoints are converted
by :mod:`napari_sam2.engine.checkpoints`. Every failure is a
:class:`~napari_sam2.errors.ModelLoadError` that says what to do about it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch

from napari_sam2.engine.checkpoints import build_network, read_state_dict
from napari_sam2.engine.families import FAMILIES, ModelFamily, family_for_model_type, family_of
from napari_sam2.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import EdgeTamVideoModel, PreTrainedConfig, Sam2VideoModel, Sam3TrackerVideoModel

    #: A transformers video network of a family napari-sam2 runs.
    VideoNetwork: TypeAlias = Sam2VideoModel | Sam3TrackerVideoModel | EdgeTamVideoModel

__all__ = ["Sam2Model", "load_model", "as_sam2_model", "resolve_device", "check_precision", "MODEL_IDS"]

#: Short names of the released checkpoints and their Hugging Face hub ids.
MODEL_IDS = {
    "sam2.1-tiny": "facebook/sam2.1-hiera-tiny",
    "sam2.1-small": "facebook/sam2.1-hiera-small",
    "sam2.1-base-plus": "facebook/sam2.1-hiera-base-plus",
    "sam2.1-large": "facebook/sam2.1-hiera-large",
    # SAM 3 (gated: request access on the model page); transformers loads its tracker from it
    "sam3": "facebook/sam3",
    # EdgeTAM in transformers' format (Meta's own edgetam.pt is not read: see _load_checkpoint)
    "edgetam": "yonigozlan/EdgeTAM-hf",
}
#: The short name of each family's default checkpoint.
_SHORT = {"sam2": "sam2.1-tiny", "sam3": "sam3", "edgetam": "edgetam"}
#: Other spellings of the family names.
_NAME_ALIASES = {"sam3-tracker": "sam3", "sam-3": "sam3", "edge-tam": "edgetam"}


@dataclass
class Sam2Model:
    """A SAM 2 family network ready for inference.

    Attributes
    ----------
    network : transformers.Sam2VideoModel, Sam3TrackerVideoModel or EdgeTamVideoModel
        The network, in eval mode, on ``device``.
    device : torch.device
        Where it runs.
    name : str
        Where it came from (short name, hub id, folder or file), for logs and cache keys.
    autocast_dtype : torch.dtype or None
        Mixed precision used inside :meth:`inference` (bfloat16 on CUDA), or None.
    info : dict
        Where the weights came from (``source``, ``sha256``, hub ``revision`` ...), and
        ``image_mean`` / ``image_std`` when the model folder declares its own.
    """

    network: Any  # a VideoNetwork
    device: torch.device
    name: str = "custom"
    autocast_dtype: torch.dtype | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if family_of(self.network) is None:
            raise TypeError(f"{type(self.network).__name__} is not a video model of a known family "
                            f"({', '.join(f.model_class for f in FAMILIES.values())})")

    @property
    def family(self) -> ModelFamily:
        """SAM 2, SAM 3 tracker or EdgeTAM (see :mod:`napari_sam2.engine.families`)."""
        family = family_of(self.network)
        assert family is not None  # as_sam2_model and load_model accept only these families
        return family

    @property
    def image_size(self) -> int:
        """Side of the square model input, in pixels (1024 for SAM 2 and EdgeTAM, 1008 for SAM 3)."""
        return int(self.network.config.image_size)

    @property
    def image_mean(self) -> tuple[float, float, float]:
        """Per-channel mean subtracted from the [0, 1] input (the family's, or the folder's own)."""
        return tuple(self.info.get("image_mean") or self.family.image_mean)

    @property
    def image_std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation the input is divided by."""
        return tuple(self.info.get("image_std") or self.family.image_std)

    @property
    def mask_size(self) -> int:
        """Side of the low-resolution mask logits the decoder returns.

        A quarter of the input for SAM 2 and EdgeTAM; 4 x the 72 image-feature side, 288, for SAM 3.
        """
        return int(self.network.prompt_encoder.mask_input_size[0])

    @property
    def memory_dtype(self) -> torch.dtype | None:
        """The dtype stored memories must have under this precision (None: as the network makes them).

        SAM 2 and SAM 3 store memory features in bfloat16 whatever the precision; under float16
        autocast, memory attention would then mix bfloat16 and float16, which autocast refuses.
        """
        return torch.float16 if self.autocast_dtype == torch.float16 else None

    @property
    def signature(self) -> str:
        """A short string that changes when the weights, the preprocessing or the precision change."""
        return (f"{self.name}|{self.family.key}|{self.image_size}|{self.autocast_dtype}|"
                f"{self.image_mean}|{self.image_std}|{self.info.get('sha256', '')}")

    @contextlib.contextmanager
    def inference(self):
        """Enter inference mode (and autocast on CUDA) for the calling thread.

        Both are thread-local in torch, so every worker thread that runs the network enters
        this itself.
        """
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.inference_mode())
            if self.autocast_dtype is not None:
                stack.enter_context(torch.autocast(self.device.type, dtype=self.autocast_dtype))
            yield


def as_sam2_model(model: Sam2Model | VideoNetwork) -> Sam2Model:
    """Accept a :class:`Sam2Model` or a bare transformers video model of a known family.

    ``Sam2VideoModel``, ``Sam3TrackerVideoModel`` or ``EdgeTamVideoModel``.
    """
    if isinstance(model, Sam2Model):
        return model
    if family_of(model) is not None:
        device = next(model.parameters()).device
        return _finish(Sam2Model(network=model.eval(), device=device, name="custom"), compile=False)
    raise TypeError(
        f"expected a model from napari_sam2.load_model() or a transformers Sam2VideoModel, "
        f"Sam3TrackerVideoModel or EdgeTamVideoModel, got {type(model).__name__}"
    )


#: Approximate download sizes, for messages.
_DOWNLOAD_MB = {"sam2.1-tiny": 156, "sam2.1-small": 185, "sam2.1-base-plus": 324, "sam2.1-large": 898,
                "sam3": 3450, "edgetam": 56}
#: Bare size names accepted in place of the short names.
_SIZE_ALIASES = {"tiny": "tiny", "small": "small", "base-plus": "base-plus", "base+": "base-plus",
                 "b+": "base-plus", "large": "large"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
_CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".safetensors"}
#: What is fetched from a hub repository: the transformers config, weights and preprocessing
#: (image mean/std), not Meta's .pt.
_HUB_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "*preprocessor_config.json",
              "processor_config.json"]

ProgressCallback = Callable[[int, int, str], Any]


def load_model(
    name_or_path: str | os.PathLike[str] | Sam2Model | VideoNetwork = "sam2.1-tiny",
    *,
    device: str | torch.device | None = "auto",
    dtype: torch.dtype | str | None = None,
    progress: ProgressCallback | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    revision: str | None = None,
    config: PreTrainedConfig | dict[str, Any] | None = None,
    image_size: int | None = None,
    compile: bool | dict[str, Any] = False,
) -> Sam2Model:
    """Load a video model: SAM 2 / 2.1, SAM 3's tracker or EdgeTAM.

    Parameters
    ----------
    name_or_path : str, path or model
        One of

        * a short name: ``"sam2.1-tiny"``, ``"sam2.1-small"``, ``"sam2.1-base-plus"``,
          ``"sam2.1-large"`` (or just ``"tiny"`` ...), ``"sam3"`` (SAM 3's tracker, from the
          gated ``facebook/sam3``), ``"edgetam"`` (needs ``napari-sam2[edgetam]``), or a hub id
          such as ``"facebook/sam2.1-hiera-tiny"``: downloaded once (config, safetensors and
          processor files) into the Hugging Face cache (``HF_HOME``), then loaded from there,
          also offline;
        * a folder with ``config.json`` and ``model.safetensors`` (``save_pretrained`` output) of
          a ``sam2_video``, ``sam3_tracker_video`` / ``sam3_video`` or ``edgetam_video`` model;
        * a Meta checkpoint (``sam2.1_hiera_tiny.pt``, or a fine-tune in that format such as
          MedSAM2), or a ``.safetensors`` file of a state dict; the architecture is read from
          the tensor shapes;
        * a transformers ``Sam2VideoModel``, ``Sam3TrackerVideoModel`` or ``EdgeTamVideoModel``,
          or a :class:`Sam2Model` (passed through).
    device : str or torch.device
        ``"auto"`` (CUDA, then Apple MPS, then CPU), ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"cpu"``.
    dtype : torch.dtype or str, optional
        Precision used inside :meth:`Sam2Model.inference` (weights stay float32): ``"float32"``,
        ``"bfloat16"`` or ``"float16"`` autocast. Default: bfloat16 on CUDA GPUs that support it
        (Ampere and newer), float32 elsewhere. A precision the device cannot autocast in is
        refused here with the reason (bfloat16 on older NVIDIA GPUs, for instance).
    progress : callable, optional
        ``progress(done_bytes, total_bytes, message)``, called while downloading and at each
        loading step (``total_bytes`` is 0 when there is no byte count). During a download it
        is called from the download threads, one call at a time. Exceptions it raises (e.g. to
        cancel) propagate unchanged.
    cache_dir : path, optional
        Hugging Face cache to use instead of the default one.
    local_files_only : bool, optional
        Never contact the hub. Default: True when ``HF_HUB_OFFLINE`` is set.
    revision : str, optional
        Hub branch, tag or commit to load (default: the latest).
    config : transformers.Sam2VideoConfig or dict, optional
        For checkpoint files only: the architecture, when it is not one of the released ones.
    image_size : int, optional
        For checkpoint files only: the model input size the weights were trained at
        (default 1024; MedSAM2 uses 512). It leaves no trace in the weights.
    compile : bool or dict
        ``torch.compile`` the image encoder and the memory attention (a dict is passed to
        ``torch.compile`` as options, e.g. ``{"mode": "max-autotune"}``). Both are compiled and
        run once on a blank frame here, so a compiler that fails falls back to the plain network
        with a warning instead of failing later. Worth it on a GPU; compiling takes minutes.

    Returns
    -------
    Sam2Model
        In eval mode on the chosen device; ``info`` identifies the weights (hub revision and
        the sha256 of the weights file), so ``signature`` changes with them.

    Raises
    ------
    ModelLoadError
        With what went wrong and how to fix it (offline without a cached copy, unknown name,
        unreadable file, a checkpoint that is not SAM 2, unavailable device ...).
    """
    if progress is not None and not callable(progress):
        raise ModelLoadError(f"progress must be a callable(done, total, message), got {progress!r}")
    # check the device and precision first so a bad choice fails before a long download
    target = resolve_device(device) if not _is_auto(device) else None
    _autocast_dtype(dtype, target or torch.device("cpu"))
    if not isinstance(compile, (bool, dict)):
        raise ModelLoadError("compile must be True, False or a dict of torch.compile options, "
                             f"got {compile!r}")
    only_checkpoints = config is not None or image_size is not None

    if isinstance(name_or_path, Sam2Model) or _is_transformers_model(name_or_path):
        if only_checkpoints:
            raise ModelLoadError("config= and image_size= apply to checkpoint files, not to a loaded model")
        return _finish(_adopt(name_or_path, target, dtype), compile)
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ModelLoadError(
            "load_model() takes a model name, a folder, a checkpoint file or a Sam2VideoModel, "
            f"got {type(name_or_path).__name__}"
        )

    text = os.fspath(name_or_path).strip()
    path = Path(text).expanduser()
    report = _Reporter(progress)
    if path.exists():
        if path.is_file() and path.name == "config.json":
            path = path.parent
        in_folder = path.suffix == ".safetensors" and (path.parent / "config.json").is_file()
        if path.is_file() and in_folder and not only_checkpoints:
            path = path.parent  # a weights file of a transformers folder: load the folder
        if path.is_dir():
            if only_checkpoints:
                raise ModelLoadError(
                    "config= and image_size= apply to checkpoint files; a transformers folder "
                    "carries its own config.json"
                )
            network, info = _load_folder(path, report)
        elif path.suffix.lower() in _CHECKPOINT_SUFFIXES:
            network, info = _load_checkpoint(path, report, config=config, image_size=image_size)
        else:
            raise ModelLoadError(
                f"{path} is neither a model folder nor a checkpoint "
                f"({', '.join(sorted(_CHECKPOINT_SUFFIXES))})"
            )
        name = str(path)
    else:
        repo_id, name = _hub_repo_id(text)
        if repo_id is None:
            if "/" in text or os.sep in text or path.suffix.lower() in _CHECKPOINT_SUFFIXES:
                raise ModelLoadError(f"no such file or folder: {path}")
            raise ModelLoadError(
                f"unknown model {text!r}: use one of {', '.join(MODEL_IDS)} (or tiny, small, "
                "base-plus, large), a hub id such as facebook/sam2.1-hiera-tiny, a model folder "
                "or a Meta .pt checkpoint"
            )
        if only_checkpoints:
            raise ModelLoadError("config= and image_size= apply to checkpoint files, not to hub models")
        folder = _download_from_hub(
            repo_id, name=name, revision=revision, cache_dir=cache_dir,
            local_files_only=local_files_only, report=report,
        )
        network, info = _load_folder(folder, report, repo_id=repo_id)

    if target is None:
        target = resolve_device("auto")
    report(0, 0, f"Moving the model to {target}")
    network = network.to(target).eval()
    model = Sam2Model(network=network, device=target, name=name,
                      autocast_dtype=_autocast_dtype(dtype, target), info=info)
    return _finish(model, compile, report)


def _finish(model: Sam2Model, compile, report=None) -> Sam2Model:
    """Prepare a loaded network for fast inference (see :mod:`napari_sam2.engine.speed`)."""
    from napari_sam2.engine import speed

    speed.cache_position_encodings(model.network)
    speed.install_shortcuts(model)
    if compile:
        if report is not None:
            report(0, 0, "Compiling the image encoder and memory attention")
        speed.compile_network(model, {} if compile is True else dict(compile))
    return model


# --------------------------------------------------------------------------- devices

def _is_auto(device) -> bool:
    return device is None or (isinstance(device, str) and device.strip().lower() == "auto")


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Turn ``"auto"``/``"cuda"``/``"mps"``/``"cpu"`` into an available ``torch.device``.

    Raises
    ------
    ModelLoadError
        When the requested device does not exist on this machine.
    """
    if _is_auto(device):
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
    _autocast_dtype(dtype, resolve_device(device))


def _autocast_dtype(dtype, device: torch.device) -> torch.dtype | None:
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


def _is_transformers_model(obj) -> bool:
    if type(obj).__name__ not in {f.model_class for f in FAMILIES.values()}:
        return False
    return family_of(obj) is not None


def _adopt(model, target: torch.device | None, dtype) -> Sam2Model:
    """An already-built model: move it only when a device or dtype was asked for."""
    wrapped = as_sam2_model(model)
    if isinstance(model, Sam2Model) and target is None and dtype is None:
        return model
    device = target or wrapped.device
    network = wrapped.network.to(device).eval()
    info = dict(wrapped.info) or {"source": "instance"}
    return Sam2Model(network=network, device=device, name=wrapped.name,
                     autocast_dtype=_autocast_dtype(dtype, device), info=info)


# --------------------------------------------------------------------------- progress

class _Reporter:
    """Calls the user's ``progress`` (if any) from any thread, one call at a time."""

    def __init__(self, progress: ProgressCallback | None):
        self.progress = progress
        self.lock = threading.Lock()
        self.raised: BaseException | None = None  # what the callback raised, to re-raise as is

    def __call__(self, done: int, total: int, message: str) -> None:
        if self.progress is None:
            return
        with self.lock:
            try:
                self.progress(int(done), int(total), message)
            except BaseException as err:
                self.raised = err
                raise

    def tqdm_class(self, message: str):
        """A tqdm stand-in for ``snapshot_download(tqdm_class=...)`` that reports bytes.

        huggingface_hub instantiates it for its byte bars (``unit="B"``: the bytes written,
        fed by every file's download) and for the file counter, and sets ``total`` as files are
        announced. The "Downloading bytes" bar counts network bytes against an estimated total,
        so only the others are reported. Unknown tqdm methods are accepted and ignored.
        """
        reporter = self

        class _Bar:
            def __init__(self, *args, total=None, initial=0, unit="it", desc=None, **kwargs):
                self._n = float(initial or 0)
                self._total = float(total or 0)
                self.unit = unit
                self.desc = str(desc or "")
                self.disable = False
                self.format_dict: dict = {}

            @property
            def n(self):
                return self._n

            @property
            def total(self):
                return self._total

            @total.setter
            def total(self, value):
                self._total = float(value or 0)

            def update(self, n=1):
                self._n += float(n or 0)
                if self.unit == "B" and not self.desc.startswith("Downloading bytes"):
                    reporter(self._n, max(self._total, self._n), message)

            def set_description(self, desc=None, refresh=True):
                self.desc = str(desc or "")

            set_description_str = set_description

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                return False

            def __getattr__(self, name):  # refresh, close, set_postfix_str, ...
                if name.startswith("__"):
                    raise AttributeError(name)
                return lambda *args, **kwargs: None

        return _Bar


# --------------------------------------------------------------------------- the hub

def _hub_repo_id(text: str) -> tuple[str | None, str]:
    """(hub repo id, display name) for a short name, size alias or hub id; (None, text) otherwise."""
    key = text.lower().replace("_", "-")
    key = _NAME_ALIASES.get(key, key)
    if key in MODEL_IDS:
        return MODEL_IDS[key], key
    for short, repo in MODEL_IDS.items():
        if key == repo.lower():
            return repo, short
    for prefix in ("sam2.1-hiera-", "sam2.1-", ""):
        if key.startswith(prefix) and key[len(prefix):] in _SIZE_ALIASES:
            short = f"sam2.1-{_SIZE_ALIASES[key[len(prefix):]]}"
            return MODEL_IDS[short], short
    if _HUB_ID.fullmatch(text):
        return text, text
    return None, text


def _offline_env() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return bool(constants.HF_HUB_OFFLINE) or any(f.strip().upper() in {"1", "ON", "YES", "TRUE"}
                                                 for f in flags)


def _download_from_hub(repo_id, *, name, revision=None, cache_dir=None, local_files_only=None,
                       report: _Reporter, download=None) -> Path:
    """Fetch (or find in the cache) a hub repository's config and safetensors; its folder.

    ``download`` stands in for ``huggingface_hub.snapshot_download`` (tests).
    """
    from huggingface_hub import constants, errors

    if download is None:
        from huggingface_hub import snapshot_download as download
    offline = _offline_env() if local_files_only is None else bool(local_files_only)
    size = f" (~{_DOWNLOAD_MB[name]} MB)" if name in _DOWNLOAD_MB else ""
    report(0, 0, f"Looking for {repo_id} in the model cache")
    try:
        # config.json first: a model this install cannot build (EdgeTAM without timm, an
        # image-only SAM) is refused before its weights are fetched
        first = download(repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
                         allow_patterns=["config.json"], tqdm_class=report.tqdm_class(f"Reading {repo_id}"))
        if (Path(first) / "config.json").is_file():
            _read_config(Path(first), f"{repo_id} on the Hugging Face hub", "")
        folder = download(
            repo_id, revision=revision, cache_dir=cache_dir, local_files_only=offline,
            allow_patterns=_HUB_FILES, tqdm_class=report.tqdm_class(f"Downloading {repo_id}{size}"),
        )
    except ModelLoadError:
        raise
    except Exception as err:
        if report.raised is not None:  # the caller's progress callback stopped the download
            raise report.raised from None
        also = " (no file or folder of that name exists here either)" if "/" in name else ""
        if isinstance(err, errors.GatedRepoError):  # (a subclass of RepositoryNotFoundError)
            raise ModelLoadError(
                f"{repo_id} is a gated model: request access on the model page "
                f"(https://huggingface.co/{repo_id}), then log in on this computer with "
                f"`hf auth login` (a token of the account that was granted access) and load it "
                f"again. ({type(err).__name__})"
            ) from err
        if isinstance(err, (errors.RepositoryNotFoundError, errors.HFValidationError)):
            raise ModelLoadError(
                f"the Hugging Face hub has no accessible model {repo_id!r}{also}: check the name "
                f"(short names: {', '.join(MODEL_IDS)}) or log in (hf auth login) for private or "
                f"gated repositories. ({type(err).__name__})"
            ) from err
        if isinstance(err, errors.RevisionNotFoundError):
            raise ModelLoadError(f"{repo_id} has no revision {revision!r}") from err
        cache = Path(cache_dir).expanduser() if cache_dir is not None else Path(constants.HF_HUB_CACHE)
        why = ("downloads are switched off (HF_HUB_OFFLINE is set or local_files_only=True)" if offline
               else "the Hugging Face hub could not be reached")
        short = name if name in MODEL_IDS else repo_id
        raise ModelLoadError(
            f"cannot load {repo_id!r}{also}: {why}, and no complete copy is in the model cache "
            f"({cache}). To fix this, either\n"
            f"  * connect to the internet once and load it again{size}"
            + (" with HF_HUB_OFFLINE unset" if offline else "")
            + "; it is then cached and works offline;\n"
            f"  * or, on a computer with internet, download it "
            f"(hf download {repo_id} --include config.json model.safetensors --local-dir {short}), "
            f"copy the folder here and load it by path: load_model('/path/to/{short}');\n"
            "  * or, if the weights are already cached elsewhere (a shared drive), point the "
            "HF_HOME environment variable at that cache before starting Python.\n"
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"
        ) from err
    return Path(folder)


# --------------------------------------------------------------------------- folders and files

def _read_config(folder: Path, where: str, refetch: str) -> tuple[ModelFamily, dict]:
    """The family and the architecture's config dict of a model folder's config.json.

    Raises :class:`ModelLoadError` when it is missing, unreadable, not a video model of a known
    family, or needs packages this install lacks (so a download can stop after config.json).
    """
    from napari_sam2.engine.families import missing_dependencies

    config_path = folder / "config.json"
    if not config_path.is_file():
        checkpoints = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in {".pt", ".pth"})
        hint = f" It holds {checkpoints[0]}: pass that file to load a Meta checkpoint." if checkpoints else ""
        raise ModelLoadError(
            f"{where} has no config.json, so it is not a transformers model folder (config.json + "
            f"model.safetensors, as written by Sam2VideoModel.save_pretrained).{hint}"
        )
    try:
        config_dict = json.loads(config_path.read_text(encoding="utf-8"))
        model_type = config_dict.get("model_type")
    except (ValueError, OSError, AttributeError) as err:
        raise ModelLoadError(f"{config_path} is not a valid JSON config ({err}){refetch}") from err
    family = family_for_model_type(model_type)
    if family is None:
        video_types = ", ".join(repr(t) for f in FAMILIES.values() for t in f.model_types)
        for other in FAMILIES.values():
            if model_type in other.image_only_types:
                raise ModelLoadError(
                    f"{where} holds an image-only {other.title} model (model_type {model_type!r}), "
                    f"which cannot track objects through a stack; use its video model (model_type "
                    f"{other.model_types[0]!r}), e.g. {MODEL_IDS[_SHORT[other.key]]}"
                    + (", or Meta's .pt checkpoint" if other.key == "sam2" else "")
                )
        raise ModelLoadError(
            f"{where} holds a {model_type!r} model, not SAM 2, SAM 3's tracker or EdgeTAM "
            f"(config.json must say model_type {video_types})"
        )
    if model_type == "sam3_video":  # the whole SAM 3: its tracker holds the architecture
        config_dict = config_dict.get("tracker_config") or {}
    why = missing_dependencies(family, config_dict)
    if why:
        raise ModelLoadError(f"cannot build the model in {where}: {why}")
    return family, config_dict


def _load_folder(folder: Path, report: _Reporter, repo_id: str | None = None):
    """A transformers folder (config.json + safetensors) -> (network on CPU, info)."""
    from napari_sam2.engine.families import read_preprocessing

    where = f"the cached copy of {repo_id} ({folder})" if repo_id else str(folder)
    refetch = ("; delete it from the cache and load it again with internet access" if repo_id
               else "; re-download or re-save the model")
    family, _ = _read_config(folder, where, refetch)
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not weights:
        raise ModelLoadError(f"{where} has a config.json but no weights (model.safetensors){refetch}")

    report(0, 0, f"Loading weights from {folder}")
    try:
        network, loading = family.network_class().from_pretrained(
            folder, output_loading_info=True, local_files_only=True, dtype=torch.float32
        )
    except Exception as err:  # corrupt safetensors, config that does not build, ...
        raise ModelLoadError(
            f"could not read the model in {where}: the weights or config.json are damaged or do "
            f"not fit together ({type(err).__name__}: {err}){refetch}"
        ) from err
    kinds = ("missing_keys", "unexpected_keys", "mismatched_keys")
    problems = {k: sorted(loading.get(k) or []) for k in kinds}
    if any(problems.values()):
        detail = "; ".join(
            f"{len(v)} {k.replace('_keys', '')}: {', '.join(map(str, v[:6]))}{' ...' if len(v) > 6 else ''}"
            for k, v in problems.items() if v
        )
        raise ModelLoadError(f"the weights in {where} do not match its config.json ({detail}){refetch}")

    info = {"source": "hub" if repo_id else "folder", "path": str(folder), "sha256": _fingerprint(weights)}
    preprocessing = read_preprocessing(folder)
    info.update({k: v for k, v in preprocessing.items() if k in ("image_mean", "image_std")})
    size = preprocessing.get("size")
    if size is not None and size != int(network.config.image_size):
        raise ModelLoadError(
            f"{where} resizes frames to {size} px in its processor files but its network takes "
            f"{network.config.image_size} px: the folder mixes two models{refetch}"
        )
    if repo_id:
        info.update(repo_id=repo_id, revision=folder.name)  # snapshot folders are named by commit
    return network, info


def _load_checkpoint(path: Path, report: _Reporter, *, config=None, image_size=None):
    """A Meta ``.pt`` (or a state-dict file) -> (network on CPU, info)."""
    report(0, 0, f"Reading checkpoint {path}")
    state_dict = read_state_dict(path)
    if any(k.startswith("spatial_perceiver.") for k in state_dict):
        # Meta's EdgeTAM: its RepViT and perceiver names are not in the SAM 2 renaming table
        raise ModelLoadError(
            f"{path} is a Meta EdgeTAM checkpoint (edgetam.pt), which napari-sam2 does not read; "
            "load EdgeTAM in transformers' format instead: load_model('edgetam') (hub "
            f"{MODEL_IDS['edgetam']}) or a folder saved with EdgeTamVideoModel.save_pretrained"
        )
    report(0, 0, "Converting the checkpoint")
    network, description = build_network(state_dict, config=config, image_size=image_size)
    info = {
        "source": "checkpoint",
        "path": str(path),
        "sha256": _fingerprint([path]),
        "variant": description,
        "format": "meta" if any(k.startswith("image_encoder.") for k in state_dict) else "transformers",
    }
    return network, info


_HASHES: dict[tuple, str] = {}
_HASH_LOCK = threading.Lock()


def _fingerprint(files) -> str:
    """sha256 of the weights: the blob name in a hub cache, else hashed (cached by size/mtime)."""
    digests = []
    for file in files:
        real = Path(os.path.realpath(file))
        if real.parent.name == "blobs" and re.fullmatch(r"[0-9a-f]{64}", real.name):
            digests.append(real.name)  # the hub cache names LFS blobs by their sha256
            continue
        stat = real.stat()
        key = (str(real), stat.st_size, stat.st_mtime_ns)
        with _HASH_LOCK:
            digest = _HASHES.get(key)
        if digest is None:
            sha = hashlib.sha256()
            with open(real, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 22), b""):
                    sha.update(chunk)
            digest = sha.hexdigest()
            with _HASH_LOCK:
                _HASHES[key] = digest
        digests.append(digest)
    if len(digests) == 1:
        return digests[0]
    return hashlib.sha256("".join(digests).encode()).hexdigest()
