"""Where a model's weights come from: the Hugging Face hub, a transformers folder, a Meta checkpoint.

:func:`napari_sam2.engine.models.load_model` resolves a name or path here: short names and hub
ids (:data:`MODEL_IDS`), downloads into the Hugging Face cache with progress reports (config.json
first, so that a model this install cannot build is refused before its weights), transformers
folders (their ``config.json`` checked for a family napari-sam2 runs) and Meta ``.pt``
checkpoints (converted by :mod:`napari_sam2.engine.checkpoints`). Every failure is a
:class:`~napari_sam2.errors.ModelLoadError` that says what to do about it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from napari_sam2.engine.checkpoints import build_network, read_state_dict
from napari_sam2.engine.edgetam_checkpoint import build_edgetam_network, edgetam_config, is_edgetam_checkpoint
from napari_sam2.engine.families import FAMILIES, ModelFamily, family_for_model_type
from napari_sam2.errors import ModelLoadError

__all__ = ["MODEL_IDS", "ProgressCallback", "Reporter", "hub_repo_id", "download_from_hub", "load_folder",
           "load_checkpoint", "CHECKPOINT_SUFFIXES"]

#: Short names of the released checkpoints and their Hugging Face hub ids.
MODEL_IDS = {
    "sam2.1-tiny": "facebook/sam2.1-hiera-tiny",
    "sam2.1-small": "facebook/sam2.1-hiera-small",
    "sam2.1-base-plus": "facebook/sam2.1-hiera-base-plus",
    "sam2.1-large": "facebook/sam2.1-hiera-large",
    # SAM 3 (gated: request access on the model page); transformers loads its tracker from it
    "sam3": "facebook/sam3",
    # EdgeTAM in transformers' format (Meta's own edgetam.pt loads from a file: load_checkpoint)
    "edgetam": "yonigozlan/EdgeTAM-hf",
}
#: The short name of each family's default checkpoint.
_SHORT = {"sam2": "sam2.1-tiny", "sam3": "sam3", "edgetam": "edgetam"}
#: Other spellings of the family names.
_NAME_ALIASES = {"sam3-tracker": "sam3", "sam-3": "sam3", "edge-tam": "edgetam"}
#: Approximate download sizes, for messages.
_DOWNLOAD_MB = {"sam2.1-tiny": 156, "sam2.1-small": 185, "sam2.1-base-plus": 324, "sam2.1-large": 898,
                "sam3": 3450, "edgetam": 56}
#: Bare size names accepted in place of the short names.
_SIZE_ALIASES = {"tiny": "tiny", "small": "small", "base-plus": "base-plus", "base+": "base-plus",
                 "b+": "base-plus", "large": "large"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
CHECKPOINT_SUFFIXES = {".pt", ".pth", ".ckpt", ".bin", ".safetensors"}
#: What is fetched from a hub repository: the transformers config, weights and preprocessing
#: (image mean/std), not Meta's .pt.
_HUB_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "*preprocessor_config.json",
              "processor_config.json"]

ProgressCallback = Callable[[int, int, str], Any]


# --------------------------------------------------------------------------- progress

class Reporter:
    """Calls the user's ``progress`` (if any) from any thread, one call at a time."""

    def __init__(self, progress: ProgressCallback | None):
        self.progress = progress
        self.lock = threading.Lock()
        self.raised: BaseException | None = None  # what the callback raised, to re-raise as is

    def __call__(self, done: float, total: float, message: str) -> None:
        """Report ``done`` of ``total`` (0: unknown) with ``message``.

        Byte counts from the download bars arrive as floats; the callback gets whole numbers.
        """
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

def hub_repo_id(text: str) -> tuple[str | None, str]:
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


def download_from_hub(repo_id, *, name, revision=None, cache_dir=None, local_files_only=None,
                       report: Reporter, download=None) -> Path:
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


def load_folder(folder: Path, report: Reporter, repo_id: str | None = None):
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


def load_checkpoint(path: Path, report: Reporter, *, config=None, image_size=None):
    """A Meta ``.pt`` (or a state-dict file) -> (network on CPU, info)."""
    report(0, 0, f"Reading checkpoint {path}")
    state_dict = read_state_dict(path)
    report(0, 0, "Converting the checkpoint")
    if is_edgetam_checkpoint(state_dict):  # Meta's edgetam.pt: one released architecture
        from napari_sam2.engine.families import missing_dependencies

        if config is not None or image_size not in (None, 1024):
            raise ModelLoadError(f"{path} is Meta's EdgeTAM, whose architecture is fixed (1024 px): "
                                 "load it without config= or image_size=")
        why = missing_dependencies(FAMILIES["edgetam"], edgetam_config().to_dict())
        if why:
            raise ModelLoadError(f"{path} is Meta's EdgeTAM: {why}")
        network, description = build_edgetam_network(state_dict)
    else:
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
