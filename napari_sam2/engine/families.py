"""The model families the engine runs: SAM 2 / 2.1, SAM 3's tracker and EdgeTAM.

All three are transformers video models that track exactly like SAM 2 (same prompts, same memory
bank, same private methods the engine drives); they differ in their image encoder, their input
size and normalisation, and in how EdgeTAM compresses memories. :class:`ModelFamily` holds what
the rest of the package needs to know about each; :func:`family_of` finds a network's family.
Nothing here imports torch or transformers at import time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ModelFamily", "FAMILIES", "family_of", "family_for_model_type", "read_preprocessing",
           "missing_dependencies"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelFamily:
    """What differs between the video models the engine runs.

    Attributes
    ----------
    key : str
        ``"sam2"``, ``"sam3"`` or ``"edgetam"``.
    title : str
        Name for messages and the GUI.
    model_types : tuple of str
        ``model_type`` values of a ``config.json`` that hold this family's video model.
    image_only_types : tuple of str
        ``model_type`` values of the same family's image-only models (which cannot track).
    model_class, session_class : str
        transformers' network and inference-session classes (names in ``transformers``).
    image_size : int
        Input side of the released checkpoints.
    image_mean, image_std : tuple of float
        Normalisation of the network's input (after scaling pixels to [0, 1]).
    extra : str or None
        The ``napari-sam2[...]`` extra that installs what the family needs beyond the base
        install, or None.
    memory_batch_dim : int
        The object axis of the memories ``_encode_new_memory`` returns: SAM 2 and SAM 3 return
        ``(H*W, objects, C)`` features, EdgeTAM's perceiver ``(objects, latents, C)``.
    """

    key: str
    title: str
    model_types: tuple[str, ...]
    image_only_types: tuple[str, ...]
    model_class: str
    session_class: str
    image_size: int
    image_mean: tuple[float, float, float]
    image_std: tuple[float, float, float]
    extra: str | None = None
    memory_batch_dim: int = 1

    def network_class(self) -> type[Any]:
        """The family's transformers video model class (imports transformers)."""
        import transformers

        return getattr(transformers, self.model_class)

    def inference_session_class(self) -> type[Any]:
        """The family's transformers inference session class (imports transformers)."""
        import transformers

        return getattr(transformers, self.session_class)


FAMILIES: dict[str, ModelFamily] = {
    "sam2": ModelFamily(
        key="sam2", title="SAM 2", model_types=("sam2_video",), image_only_types=("sam2",),
        model_class="Sam2VideoModel", session_class="Sam2VideoInferenceSession", image_size=1024,
        image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD,
    ),
    # SAM 3's tracker: a ViT image encoder at 1008 px (14-pixel patches), normalised to [-1, 1]
    # (transformers' Sam3 processors: IMAGENET_STANDARD mean/std 0.5). facebook/sam3 holds the
    # whole SAM 3 (model_type "sam3_video"); transformers loads its tracker part from it.
    "sam3": ModelFamily(
        key="sam3", title="SAM 3 tracker", model_types=("sam3_tracker_video", "sam3_video"),
        image_only_types=("sam3", "sam3_tracker"), model_class="Sam3TrackerVideoModel",
        session_class="Sam3TrackerVideoInferenceSession", image_size=1008,
        image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
    ),
    # EdgeTAM: SAM 2's tracker with a RepViT image encoder (built by timm) and a spatial
    # perceiver that compresses every memory to 512 tokens; SAM 2's preprocessing.
    "edgetam": ModelFamily(
        key="edgetam", title="EdgeTAM", model_types=("edgetam_video",), image_only_types=("edgetam",),
        model_class="EdgeTamVideoModel", session_class="EdgeTamVideoInferenceSession",
        image_size=1024, image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD, extra="edgetam",
        memory_batch_dim=0,
    ),
}


def family_of(network) -> ModelFamily | None:
    """The family of a transformers network instance, or None if it is none of them."""
    name = type(network).__name__
    for family in FAMILIES.values():
        if name == family.model_class and isinstance(network, family.network_class()):
            return family
    return None


def family_for_model_type(model_type) -> ModelFamily | None:
    """The family whose video model a ``config.json``'s ``model_type`` names, or None."""
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family
    return None


#: Files of a model folder that may hold its preprocessing, in the order they are read.
PREPROCESSOR_FILES = ("video_preprocessor_config.json", "preprocessor_config.json", "processor_config.json")


def read_preprocessing(folder: Path) -> dict:
    """``image_mean`` / ``image_std`` (and ``size``) a model folder's processor files declare.

    transformers' processors write them next to the weights (``save_pretrained`` of a processor,
    and the hub repositories); a folder without them gets its family's defaults. Values that
    are not three finite numbers are ignored rather than trusted.
    """
    found: dict = {}
    for name in PREPROCESSOR_FILES:
        path = Path(folder) / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        for section in (data, data.get("video_processor") or {}, data.get("image_processor") or {}):
            if not isinstance(section, dict):
                continue
            for key in ("image_mean", "image_std"):
                value = section.get(key)
                if key not in found and value is not None and _three_numbers(value):
                    found[key] = tuple(float(v) for v in value)
            size = section.get("size")
            if "size" not in found and isinstance(size, dict) and isinstance(size.get("height"), int):
                found["size"] = int(size["height"])
    return found


def _three_numbers(value) -> bool:
    import math

    return (isinstance(value, (list, tuple)) and len(value) == 3
            and all(isinstance(v, (int, float)) and math.isfinite(v) for v in value))


def missing_dependencies(family: ModelFamily, config: dict) -> str | None:
    """Why this machine cannot build the network of a config dict (None: it can).

    EdgeTAM's released image encoder is timm's RepViT, which transformers builds only when both
    ``timm`` and ``torchvision`` import: transformers' ``is_timm_available()`` is false without
    torchvision (``transformers/utils/import_utils.py``), so ``TimmWrapperModel`` refuses to be
    built, and ``import timm`` itself imports torchvision (``timm/layers/create_norm.py``:
    ``from torchvision.ops.misc import FrozenBatchNorm2d``, in every timm from 0.9.16 to 1.0.31).
    """
    vision = config.get("vision_config") or {}
    backbone = vision.get("backbone_config") or {}
    if backbone.get("model_type") != "timm_wrapper":
        return None
    import importlib.util

    have_timm = importlib.util.find_spec("timm") is not None
    have_tv = importlib.util.find_spec("torchvision") is not None
    if have_timm and have_tv:
        from transformers.utils import is_timm_available

        if is_timm_available():
            try:
                import timm  # noqa: F401  (fails when torchvision does not load beside torch)
            except Exception as err:  # torchvision's compiled ops built for another torch
                return (f"timm is installed but does not import ({type(err).__name__}: "
                        f"{str(err).splitlines()[0] if str(err) else ''}); install the torchvision "
                        "build that matches your PyTorch")
            return None
    missing = [name for name, ok in (("timm", have_timm), ("torchvision", have_tv)) if not ok]
    return (f"{family.title}'s image encoder ({backbone.get('architecture', 'RepViT')}) is built by timm, "
            f"which needs {' and '.join(missing)}: install them with "
            f"pip install 'napari-sam2[{family.extra}]' (timm brings the torchvision that matches "
            "your PyTorch)")
