"""Importing napari_sam2, or anything napari imports from the manifest, must not import torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

import napari_sam2

MANIFEST = Path(napari_sam2.__file__).with_name("napari.yaml")


def _manifest_modules() -> list[str]:
    data = yaml.safe_load(MANIFEST.read_text())
    names = {c["python_name"].split(":")[0] for c in data.get("contributions", {}).get("commands", [])}
    return sorted(names)


def _heavy_after_import(modules: list[str]) -> list[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


def test_package_import_is_light():
    assert _heavy_after_import(["napari_sam2", "napari_sam2.conversions"]) == []


def test_lazy_attributes_resolve():
    from napari_sam2 import Sam2Session, load_model

    assert callable(load_model) and Sam2Session.__name__ == "Sam2Session"


def test_manifest_modules_import_without_torch():
    modules = _manifest_modules()
    assert modules, "the manifest names no python modules"
    assert _heavy_after_import(modules) == []


def test_public_names_are_the_lazy_ones():
    import napari_sam2

    assert set(napari_sam2.__all__) == {"__version__", *napari_sam2._LAZY}
    for name in napari_sam2.__all__:
        assert getattr(napari_sam2, name) is not None
