"""TIFF stacks (plain, ImageJ hyperstacks, OME-TIFF, GeoTIFF), read lazily with their voxel size.

Pages are read on demand through tifffile's zarr store; the voxel size comes from the
resolution tags and ImageJ ``spacing``, or from the OME ``PhysicalSize*`` attributes, or from
``ModelPixelScaleTag`` for a GeoTIFF. A truncated file is refused with what is missing.
Nothing here imports torch, Qt or napari.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from napari_sam2.arrays import LazyArray
from napari_sam2.errors import ImageReadError
from napari_sam2.io.image_stack import ImageStack

__all__ = ["read_tiff", "GEOTIFF_TAGS"]

#: GeoTIFF tags copied to label output: pixel scale, tie points, transformation, GeoKeys.
#: GDAL_METADATA (42112) and GDAL_NODATA (42113) describe the input's values, not labels.
GEOTIFF_TAGS = (33550, 33922, 34264, 34735, 34736, 34737)


def _tiff_axes(axes: str) -> str:
    # tifffile letters: S samples (RGB), I/Q/E/... sequence axes of unknown meaning
    out = []
    for a in axes:
        out.append({"S": "C"}.get(a, a if a in "TZCYX" else "Q"))
    if out.count("C") > 1:
        raise ImageReadError(f"the TIFF has axes {axes}: two channel axes are not supported")
    return "".join(out)


def _ome_pixel_sizes(xml: str) -> dict:
    """``{axis: (size, unit)}`` and the time increment from OME-XML."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return {}
    pixels = next((el for el in root.iter() if el.tag.split("}")[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    out = {}
    for axis, key in (("X", "PhysicalSizeX"), ("Y", "PhysicalSizeY"), ("Z", "PhysicalSizeZ"),
                      ("T", "TimeIncrement")):
        if key in pixels.attrib:
            try:
                out[axis] = (float(pixels.attrib[key]), pixels.attrib.get(key + "Unit",
                                                                         "s" if axis == "T" else "µm"))
            except ValueError:
                pass
    return out


def _geotiff(page) -> tuple[list, dict, tuple]:
    """GeoTIFF extratags, ``{axis: (size, unit)}`` and the map origin of pixel (0, 0)'s centre."""
    tags = []
    for code in GEOTIFF_TAGS:
        tag = page.tags.get(code)
        if tag is not None:
            value = tag.value
            if isinstance(value, np.ndarray):
                value = tuple(value.tolist())
            tags.append((code, int(tag.dtype), tag.count, value, False))
    if not tags:
        return [], {}, (0.0, 0.0)
    sizes, origin = {}, (0.0, 0.0)
    keys = {}
    geokeys = page.tags.get(34735)
    if geokeys is not None:
        v = list(geokeys.value)
        for k in range(4, 4 + 4 * v[3], 4):
            if v[k + 1] == 0:  # value stored in place
                keys[v[k]] = v[k + 3]
    model_type = keys.get(1024)  # 1 projected, 2 geographic
    unit = {9001: "m", 9002: "ft", 9003: "ftUS"}.get(keys.get(3076, 0), "m")  # 0: no unit key
    if model_type == 2:
        unit = "deg"
    pixel_is_point = keys.get(1025) == 2
    scale_tag, tie_tag = page.tags.get(33550), page.tags.get(33922)
    if scale_tag is not None:
        sx, sy = float(scale_tag.value[0]), float(scale_tag.value[1])
        sizes = {"X": (sx, unit), "Y": (-sy, unit)}  # rows go south on a north-up raster
        if tie_tag is not None:
            i, j, _, x, y, _ = (float(t) for t in tie_tag.value[:6])
            half = 0.0 if pixel_is_point else 0.5
            origin = (y - (half - j) * sy, x + (half - i) * sx)
    elif page.tags.get(34264) is not None:
        m = [float(t) for t in page.tags.get(34264).value]
        if m[1] == 0 and m[4] == 0:  # no rotation: a scale and an offset
            sizes = {"X": (m[0], unit), "Y": (m[5], unit)}
            half = 0.0 if pixel_is_point else 0.5
            origin = (m[7] + half * m[5], m[3] + half * m[0])
    return tags, sizes, origin


def read_tiff(path: Path) -> ImageStack:
    """Open a TIFF file as an :class:`ImageStack` (pixels read on demand)."""
    import tifffile
    import zarr

    try:
        tif = tifffile.TiffFile(path)
    except (tifffile.TiffFileError, OSError, ValueError) as err:
        raise ImageReadError(f"cannot read '{path}' as TIFF: {err}") from None
    try:
        series = tif.series[0]
        series.shape  # noqa: B018 - raises for some damaged files
    except Exception:  # an 8-byte file, no page at all...: tifffile raises IndexError and others
        tif.close()
        raise ImageReadError(f"cannot read '{path}' as TIFF: it holds no readable image (the file "
                             "is truncated or not a TIFF)") from None
    try:
        _check_tiff_complete(tif, series, path)
    except ImageReadError:
        tif.close()
        raise
    axes = _tiff_axes(series.axes)
    notes = []
    ij0 = tif.imagej_metadata if tif.is_imagej else None
    if ij0 and axes.count("C") == 1 and "Z" not in axes and "T" not in axes and _channels_only(ij0):
        # tifffile.imwrite(path, stack, imagej=True) without axes metadata stores a stack as
        # ImageJ "channels" in grayscale mode; Fiji itself marks real channels composite or color
        n = series.shape[axes.index("C")]
        axes = axes.replace("C", "Z")
        notes.append(f"'{path.name}' is an ImageJ stack of {n} images marked as channels in grayscale "
                     f"mode with no slices or frames (as tifffile writes a stack without axes "
                     f"metadata): read as {n} slices. If they really are the channels of one image, "
                     "save it as a composite (Fiji: Image > Color > Make Composite)")
    elif tif.is_shaped and series.axes.startswith("S") and series.shape[0] in (3, 4):
        # tifffile.imwrite(path, array) stores a (3 or 4, Y, X) array as one RGB(A) image with
        # separate colour planes unless told otherwise: a small stack or a 3-4 channel image
        n = series.shape[0]
        notes.append(f"'{path.name}' holds one image whose {n} planes are stored as colour "
                     f"components (tifffile's default for a ({n}, Y, X) array): read as {n} "
                     "channels. If they are frames or slices, write the file again with "
                     "tifffile.imwrite(path, stack, photometric='minisblack')")
    data: LazyArray
    try:
        # level 0: a pyramid's store would be a group of all its levels; this is the full size
        data = zarr.open_array(series.aszarr(level=0), mode="r")
    except Exception:  # a layout the zarr store cannot map: fall back to a memory map or memory
        try:
            data = tifffile.memmap(path, mode="r")
        except Exception:
            data = series.asarray()
    if tuple(data.shape) != tuple(series.shape):
        data = series.asarray().reshape(series.shape)
    sizes: dict = {}
    meta: dict = {"_open_files": [tif]}
    if notes:
        meta["notes"] = notes
    page = tif.pages.first
    ij = tif.imagej_metadata
    if tif.is_ome and tif.ome_metadata:
        sizes.update(_ome_pixel_sizes(tif.ome_metadata))
    elif ij:
        meta["imagej"] = {k: v for k, v in ij.items() if isinstance(v, (int, float, str))}
        unit = ij.get("unit")
        unit = None if unit in (None, "", "pixel") else str(unit).replace("\\u00B5", "µ")
        res = page.get_resolution() if hasattr(page, "get_resolution") else None
        if res and res[0] and res[1] and unit is not None:
            sizes["X"] = (1.0 / res[0], unit)
            sizes["Y"] = (1.0 / res[1], unit)
        if ij.get("spacing"):
            sizes["Z"] = (float(ij["spacing"]), unit)
        if ij.get("finterval"):
            sizes["T"] = (float(ij["finterval"]), ij.get("tunit", "s"))
    else:
        res = page.get_resolution() if hasattr(page, "get_resolution") else None
        runit = page.tags.get(296)
        unit = {2: "inch", 3: "cm"}.get(int(runit.value) if runit is not None else 2)
        if res and res[0] and res[1] and runit is not None and int(runit.value) in (2, 3):
            sizes["X"] = (1.0 / res[0], unit)
            sizes["Y"] = (1.0 / res[1], unit)
    geotags, geosizes, origin = _geotiff(page)
    sizes.update(geosizes)
    if not geotags:
        origin = (0.0, 0.0)
    scale = tuple(float(sizes[a][0]) if a in sizes else 1.0 for a in axes)
    units = tuple(sizes[a][1] if a in sizes else None for a in axes)
    return ImageStack(data, axes, scale, units, path, geotiff_tags=geotags, origin=origin, metadata=meta)


def _channels_only(ij: dict) -> bool:
    """ImageJ metadata with only ``channels`` (no slices or frames) in grayscale mode."""
    return (int(ij.get("channels", 1) or 1) > 1 and int(ij.get("slices", 1) or 1) == 1
            and int(ij.get("frames", 1) or 1) == 1
            and str(ij.get("mode", "grayscale")).lower() == "grayscale")


def _check_tiff_complete(tif, series, path: Path) -> None:
    """Refuse a TIFF whose pixels are not all in the file (a truncated copy or download).

    tifffile quietly reads what it can: a truncated ImageJ stack becomes its first page, a
    truncated plain stack has pages pointing past the end of the file.
    """
    size = path.stat().st_size
    n_read = int(np.prod([s for s, a in zip(series.shape, series.axes) if a not in "YXS"] or [1]))
    expected = None
    ij = tif.imagej_metadata if tif.is_imagej else None
    if ij and ij.get("images"):
        expected = int(ij["images"])
    elif tif.is_shaped and tif.shaped_metadata:
        shape = tif.shaped_metadata[0].get("shape")
        if shape:
            expected = int(np.prod([s for s in shape[:-2]] or [1]))
            samples = tif.pages[0].samplesperpixel
            # colour samples are part of each image: last (YXS, contiguous) or before Y and X
            # (SYX, separate planes: how tifffile stores a (3 or 4, Y, X) array by default)
            if len(shape) >= 3 and samples > 1 and samples in (shape[-1], shape[-3]):
                expected = int(np.prod(shape[:-3] or [1]))
    if expected is not None and n_read < expected:
        raise ImageReadError(
            f"'{path}' is truncated: it should hold {expected} images but only {n_read} can be "
            f"read (image {n_read} is the first missing one; the file has {size} bytes): copy or "
            "download it again"
        )
    offset = getattr(series, "dataoffset", None)
    if offset is not None and offset + series.nbytes > size:
        frame_bytes = max(1, series.nbytes // max(1, n_read))
        first_missing = max(0, (size - offset) // frame_bytes)
        raise ImageReadError(
            f"'{path}' is truncated: its {n_read} images need {offset + series.nbytes} bytes but the "
            f"file has {size} (image {first_missing} is the first incomplete one): copy or download it again"
        )
    if offset is not None:
        return  # contiguous data, checked as a whole (listing its pages would read every IFD)
    for k, page in enumerate(series.pages):
        if page is None or getattr(page, "parent", tif) is not tif:
            continue  # a page of another file of a multi-file OME-TIFF: its size is not ours
        ends = [o + c for o, c in zip(getattr(page, "dataoffsets", ()), getattr(page, "databytecounts", ()))]
        if any(e > size for e in ends) or (ends and not any(getattr(page, "databytecounts", ()))):
            raise ImageReadError(
                f"'{path}' is truncated: image {k} of {n_read} lies past the end of the file "
                f"({size} bytes): copy or download it again"
            )
