"""Loading video models: short names, hub ids, local folders, Meta ``.pt`` checkpoints.

:class:`Sam2Model` is what a :class:`~napari_sam2.engine.session.Sam2Session` runs: the
transformers network (SAM 2 / 2.1, SAM 3's tracker or EdgeTAM, see
:mod:`napari_sam2.engine.families`), the device it lives on, its preprocessing and how to enter
inference mode (and mixed precision) on it.
:func:`load_model` builds one from any of the places SAM 2 weights come from; hub downloads go
through ``huggingface_hub`` into the normal Hugging Face cache, Meta checkpoints are converted
by :mod:`napari_sam2.engine.checkpoints` (the reading of each source is in
:mod:`napari_sam2.engine.model_files`; devices and precision are chosen here). Every failure is
a :class:`~napari_sam2.errors.ModelLoadError` that says what to do about it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import torch

from napari_sam2.engine.devices import autocast_dtype, check_precision, is_auto, resolve_device
from napari_sam2.engine.families import FAMILIES, ModelFamily, family_of
from napari_sam2.engine.model_files import (
    CHECKPOINT_SUFFIXES,
    MODEL_IDS,
    ProgressCallback,
    Reporter,
    download_from_hub,
    hub_repo_id,
    load_checkpoint,
    load_folder,
)
from napari_sam2.errors import ModelLoadError

if TYPE_CHECKING:
    from transformers import EdgeTamVideoModel, PreTrainedConfig, Sam2VideoModel, Sam3TrackerVideoModel

    #: A transformers video network of a family napari-sam2 runs.
    VideoNetwork: TypeAlias = Sam2VideoModel | Sam3TrackerVideoModel | EdgeTamVideoModel

__all__ = ["Sam2Model", "load_model", "as_sam2_model", "resolve_device", "check_precision", "MODEL_IDS"]

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
    target = resolve_device(device) if not is_auto(device) else None
    autocast_dtype(dtype, target or torch.device("cpu"))
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
    report = Reporter(progress)
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
            network, info = load_folder(path, report)
        elif path.suffix.lower() in CHECKPOINT_SUFFIXES:
            network, info = load_checkpoint(path, report, config=config, image_size=image_size)
        else:
            raise ModelLoadError(
                f"{path} is neither a model folder nor a checkpoint "
                f"({', '.join(sorted(CHECKPOINT_SUFFIXES))})"
            )
        name = str(path)
    else:
        repo_id, name = hub_repo_id(text)
        if repo_id is None:
            if "/" in text or os.sep in text or path.suffix.lower() in CHECKPOINT_SUFFIXES:
                raise ModelLoadError(f"no such file or folder: {path}")
            raise ModelLoadError(
                f"unknown model {text!r}: use one of {', '.join(MODEL_IDS)} (or tiny, small, "
                "base-plus, large), a hub id such as facebook/sam2.1-hiera-tiny, a model folder "
                "or a Meta .pt checkpoint"
            )
        if only_checkpoints:
            raise ModelLoadError("config= and image_size= apply to checkpoint files, not to hub models")
        folder = download_from_hub(
            repo_id, name=name, revision=revision, cache_dir=cache_dir,
            local_files_only=local_files_only, report=report,
        )
        network, info = load_folder(folder, report, repo_id=repo_id)

    if target is None:
        target = resolve_device("auto")
    report(0, 0, f"Moving the model to {target}")
    network = network.to(target).eval()
    model = Sam2Model(network=network, device=target, name=name,
                      autocast_dtype=autocast_dtype(dtype, target), info=info)
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
                     autocast_dtype=autocast_dtype(dtype, device), info=info)
