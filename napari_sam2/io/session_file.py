"""Session files: the prompts of a segmentation, saved as versioned JSON and replayed exactly.

Written by the widget's "Save session" button and read by its "Load session" button and by
``napari-sam2 segment``. Format version 1::

    {"format": "napari-sam2-session", "version": 1,
     "settings": {"model": "sam2.1-tiny", "precision": "float32", "axis": 0, "channels": null,
                  "contrast": [112.0, 2310.0], "image_layer": "cells", "frame_shape": [256, 256],
                  "n_frames": 40},
     "objects": [{"id": 1, "name": "cell 1",
                  "prompts": [{"frame": 0, "points": [[120.0, 88.5], [131, 90]], "labels": [1, 0]},
                              {"frame": 0, "points": [[125, 95]], "labels": [1]},
                              {"frame": 12, "box": [[100, 70], [140, 110]]},
                              {"frame": 30, "mask": "masks/obj1_f30.tif"}]}]}

* Coordinates are ``(row, col)`` pixels of the frame (pixel centres on integers).
* ``prompts`` is ordered: entries are replayed in order, so several ``points`` entries on one
  frame are successive refinement clicks. A ``box``, a ``mask`` or ``"replace": true`` on a
  points entry replaces the frame's earlier prompts (:func:`napari_sam2.prompts.prompts_in_effect`
  gives those that still count).
* A ``mask`` is the path of a TIFF relative to the session file (nonzero = object).
* ``settings`` holds what changes the result: the model and the precision it ran in
  (``float32``, ``bfloat16`` or ``float16``), the video axis of the input, the channels fed
  to SAM 2 and the contrast limits (resolved numbers, so a replay maps intensities exactly as
  the original did), plus the frame shape and count the prompts were made on, which are
  checked before a replay. Every setting is optional.
* Keys this version does not interpret are kept on objects, settings and the top level (e.g. a
  display colour) and written back unchanged; an unknown key inside a prompt is an error,
  because it could change what the prompt means.

A file with another ``format`` or a ``version`` this code does not know is rejected with a
message saying so, never guessed at. Errors name the JSON path of the problem, e.g.
``objects[0].prompts[2].labels``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from napari_sam2.conversions import MAX_OBJECT_ID
from napari_sam2.errors import SessionFileError
from napari_sam2.prompts import Prompt

__all__ = [
    "SESSION_FORMAT",
    "SESSION_VERSION",
    "PRECISIONS",
    "SessionObject",
    "SessionSettings",
    "SessionFile",
    "read_session",
    "parse_session",
    "write_session",
    "session_to_dict",
    "session_from_engine",
    "check_session_fits",
    "replay",
]

SESSION_FORMAT = "napari-sam2-session"
SESSION_VERSION = 1
_PROMPT_KINDS = ("points", "box", "mask")
#: ``settings.precision`` values: the arithmetic a session's masks were made in
PRECISIONS = ("float32", "bfloat16", "float16")
_SETTING_KEYS = ("model", "precision", "axis", "channels", "contrast", "image_layer", "frame_shape",
                 "n_frames")


# --------------------------------------------------------------------------- data classes
@dataclass
class SessionObject:
    """An object: its label id, name and ordered prompts (:class:`~napari_sam2.prompts.Prompt`)."""

    id: int
    name: str = ""
    prompts: list[Prompt] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    @property
    def frames(self) -> list[int]:
        """Frames with prompts, sorted."""
        return sorted({p.frame for p in self.prompts})


@dataclass
class SessionSettings:
    """Settings that change the result; None means "not recorded, use the default"."""

    model: str | None = None
    #: one of :data:`PRECISIONS`
    precision: str | None = None
    axis: int | None = None
    channels: list[int] | None = None
    contrast: object = None  # "auto", [low, high] or [[low, high], ...]
    image_layer: str | None = None
    frame_shape: tuple[int, int] | None = None
    n_frames: int | None = None
    extra: dict = field(default_factory=dict)


@dataclass
class SessionFile:
    """A whole session file: settings and objects (see the module docstring)."""

    objects: list[SessionObject] = field(default_factory=list)
    settings: SessionSettings = field(default_factory=SessionSettings)
    path: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def ids(self) -> list[int]:
        """The object ids, in file order."""
        return [o.id for o in self.objects]

    @property
    def names(self) -> dict[int, str]:
        """The name of each object, by id."""
        return {o.id: o.name for o in self.objects}

    def object(self, obj_id: int) -> SessionObject:
        """The object with id ``obj_id``.

        Raises
        ------
        KeyError
            If the session has no such object.
        """
        for o in self.objects:
            if o.id == obj_id:
                return o
        raise KeyError(obj_id)


# --------------------------------------------------------------------------- validation helpers
def _fail(where: str, message: str) -> NoReturn:
    raise SessionFileError(f"{where}: {message}" if where else message)


def _int(value, where: str, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            _fail(where, f"expected an integer, got {json.dumps(value)}")
    if minimum is not None and value < minimum:
        _fail(where, f"expected an integer >= {minimum}, got {value}")
    return value


def _number(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(where, f"expected a finite number, got {json.dumps(value)}")
    return float(value)


def _list(value, where: str, length: int | None = None) -> list:
    if not isinstance(value, list):
        _fail(where, f"expected a list, got {json.dumps(value)}")
    if length is not None and len(value) != length:
        _fail(where, f"expected a list of {length} items, got {len(value)}")
    return value


def _rowcol(value, where: str) -> list[float]:
    pair = _list(value, where, 2)
    return [_number(v, f"{where}[{k}]") for k, v in enumerate(pair)]


def _load_mask(rel: str, base_dir: Path | None, where: str) -> np.ndarray:
    import tifffile

    path = Path(rel)
    if not path.is_absolute():
        path = (base_dir or Path.cwd()) / path
    if not path.is_file():
        _fail(where, f"mask file '{rel}' not found (looked for {path}); mask paths are relative "
                     "to the session file")
    try:
        mask = tifffile.imread(path)
    except Exception as err:  # tifffile raises many types for a bad file
        _fail(where, f"cannot read mask file '{rel}' as TIFF: {err}")
    mask = np.squeeze(mask)
    if mask.ndim != 2:
        _fail(where, f"mask file '{rel}' holds a {mask.ndim}-D image; a mask is one 2-D frame")
    return mask != 0


# --------------------------------------------------------------------------- reading
def _parse_prompt(entry, where: str, base_dir: Path | None) -> Prompt:
    if not isinstance(entry, dict):
        _fail(where, f"a prompt is an object like {{\"frame\": 0, \"points\": ..., \"labels\": ...}}, "
                     f"got {json.dumps(entry)}")
    if "frame" not in entry:
        _fail(where, "missing 'frame'")
    frame = _int(entry["frame"], f"{where}.frame", minimum=0)
    kinds = [k for k in _PROMPT_KINDS if k in entry]
    if len(kinds) != 1:
        _fail(where, "a prompt has exactly one of 'points' (with 'labels'), 'box' or 'mask'"
                     + (f"; got {', '.join(kinds)}" if kinds else ""))
    kind = kinds[0]
    allowed = {"frame", kind} | ({"labels", "replace"} if kind == "points" else set())
    unknown = sorted(set(entry) - allowed)
    if unknown:
        _fail(f"{where}.{unknown[0]}",
              f"unknown key for a {kind} prompt (allowed: {', '.join(sorted(allowed))})")
    rec = Prompt(frame=frame, kind=kind)
    if kind == "points":
        pts = _list(entry["points"], f"{where}.points")
        if not pts:
            _fail(f"{where}.points", "no points: give at least one [row, col]")
        rec.points = np.array([_rowcol(p, f"{where}.points[{k}]") for k, p in enumerate(pts)])
        if "labels" not in entry:
            _fail(where, "missing 'labels' (1 on the object, 0 on the background, one per point)")
        labels = _list(entry["labels"], f"{where}.labels")
        if len(labels) != len(pts):
            _fail(f"{where}.labels",
                  f"{len(labels)} labels for {len(pts)} points: give one label per point")
        for k, lab in enumerate(labels):
            if isinstance(lab, bool) or lab not in (0, 1):
                _fail(f"{where}.labels[{k}]",
                      f"a label is 1 (object) or 0 (background), got {json.dumps(lab)}")
        rec.labels = np.array(labels, dtype=np.int64)
        replace = entry.get("replace", False)
        if not isinstance(replace, bool):
            _fail(f"{where}.replace", f"expected true or false, got {json.dumps(replace)}")
        rec.replace = replace
    elif kind == "box":
        corners = _list(entry["box"], f"{where}.box", 2)
        rec.box = np.array([_rowcol(c, f"{where}.box[{k}]") for k, c in enumerate(corners)])
        if np.any(rec.box[1] == rec.box[0]):
            _fail(f"{where}.box", f"box {rec.box.tolist()} has zero height or width")
    else:
        rel = entry["mask"]
        if not isinstance(rel, str) or not rel:
            _fail(f"{where}.mask", f"expected the path of a mask TIFF, got {json.dumps(rel)}")
        rec.mask_path = rel
        rec.mask = _load_mask(rel, base_dir, f"{where}.mask")
    return rec


def _parse_settings(value, where: str = "settings") -> SessionSettings:
    if value is None:
        return SessionSettings()
    if not isinstance(value, dict):
        _fail(where, f"expected an object, got {json.dumps(value)}")
    s = SessionSettings(extra={k: v for k, v in value.items() if k not in _SETTING_KEYS})
    if value.get("model") is not None:
        if not isinstance(value["model"], str):
            _fail(f"{where}.model", f"expected a model name or path, got {json.dumps(value['model'])}")
        s.model = value["model"]
    if value.get("precision") is not None:
        if value["precision"] not in PRECISIONS:
            _fail(f"{where}.precision", f"expected one of {', '.join(PRECISIONS)}, got "
                  f"{json.dumps(value['precision'])}")
        s.precision = value["precision"]
    if value.get("axis") is not None:
        s.axis = _int(value["axis"], f"{where}.axis")
    if value.get("channels") is not None:
        chans = value["channels"]
        chans = [chans] if isinstance(chans, int) and not isinstance(chans, bool) else chans
        s.channels = [_int(c, f"{where}.channels[{k}]", 0)
                      for k, c in enumerate(_list(chans, f"{where}.channels"))]
        if not 1 <= len(s.channels) <= 3:
            _fail(f"{where}.channels", f"choose one to three channels, got {len(s.channels)}")
    c = value.get("contrast")
    if c is not None and c != "auto":
        c = _list(c, f"{where}.contrast")
        pairs = c if c and isinstance(c[0], list) else [c]
        for k, pair in enumerate(pairs):
            w = f"{where}.contrast" + (f"[{k}]" if pairs is c else "")
            lo, hi = (_number(v, f"{w}[{j}]") for j, v in enumerate(_list(pair, w, 2)))
            if hi <= lo:
                _fail(w, f"contrast limits need high > low, got [{lo}, {hi}]")
    s.contrast = c
    if value.get("image_layer") is not None:
        if not isinstance(value["image_layer"], str):
            _fail(f"{where}.image_layer",
                  f"expected a layer name, got {json.dumps(value['image_layer'])}")
        s.image_layer = value["image_layer"]
    if value.get("frame_shape") is not None:
        fs = _list(value["frame_shape"], f"{where}.frame_shape", 2)
        rows, cols = (_int(v, f"{where}.frame_shape[{k}]", 1) for k, v in enumerate(fs))
        s.frame_shape = (rows, cols)
    if value.get("n_frames") is not None:
        s.n_frames = _int(value["n_frames"], f"{where}.n_frames", 1)
    return s


def parse_session(data, base_dir=None) -> SessionFile:
    """Validate a decoded session file (a dict) and build a :class:`SessionFile`.

    Parameters
    ----------
    data : dict
        The decoded JSON.
    base_dir : str or pathlib.Path, optional
        The folder mask paths are relative to (the session file's folder).

    Raises
    ------
    SessionFileError
        Naming the JSON path of the first problem.
    """
    base_dir = None if base_dir is None else Path(base_dir)
    if not isinstance(data, dict):
        _fail("", "a session file holds a JSON object with 'format', 'version' and 'objects'")
    if data.get("format") != SESSION_FORMAT:
        _fail("format", f"not a napari-sam2 session file (expected \"format\": \"{SESSION_FORMAT}\", "
                        f"got {json.dumps(data.get('format'))})")
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int):
        _fail("version", f"expected an integer format version, got {json.dumps(version)}")
    if version > SESSION_VERSION:
        _fail("version", f"this session file has format version {version}, written by a newer "
                         f"napari-sam2; this napari-sam2 reads version {SESSION_VERSION}: "
                         "update napari-sam2 (pip install -U napari-sam2)")
    if version < 1:
        _fail("version", f"unknown session format version {version} (versions start at 1; this "
                         f"napari-sam2 reads version {SESSION_VERSION})")
    # older versions would be upgraded here, one version at a time, before validation
    objects = _list(data.get("objects"), "objects") if "objects" in data else _fail(
        "", "missing 'objects' (a list of {\"id\", \"name\", \"prompts\"})")
    out = SessionFile(settings=_parse_settings(data.get("settings")),
                      extra={k: v for k, v in data.items()
                             if k not in ("format", "version", "objects", "settings")})
    seen: dict[int, int] = {}  # object id -> index of the object that has it
    for i, obj in enumerate(objects):
        where = f"objects[{i}]"
        if not isinstance(obj, dict):
            _fail(where, "an object is {\"id\": 1, \"name\": ..., \"prompts\": [...]}, got "
                         f"{json.dumps(obj)}")
        if "id" not in obj:
            _fail(where, "missing 'id' (the object's label value, an integer >= 1)")
        obj_id = _int(obj["id"], f"{where}.id", 1)
        if obj_id > MAX_OBJECT_ID:
            _fail(f"{where}.id", f"object id {obj_id} does not fit a 32-bit label image")
        if obj_id in seen:
            _fail(f"{where}.id",
                  f"object id {obj_id} is also used by objects[{seen[obj_id]}]: ids must be unique")
        seen[obj_id] = i
        name = obj.get("name", f"object {obj_id}")
        if not isinstance(name, str):
            _fail(f"{where}.name", f"expected a string, got {json.dumps(name)}")
        prompts = _list(obj.get("prompts", []), f"{where}.prompts")
        records = [_parse_prompt(p, f"{where}.prompts[{j}]", base_dir) for j, p in enumerate(prompts)]
        extra = {k: v for k, v in obj.items() if k not in ("id", "name", "prompts")}
        out.objects.append(SessionObject(obj_id, name, records, extra))
    return out


def read_session(path) -> SessionFile:
    """Read and validate a session file; mask files are loaded relative to it.

    Raises
    ------
    SessionFileError
        If the file is missing, not JSON, or invalid (the message names file and JSON path).
    """
    path = Path(path)
    if not path.is_file():
        raise SessionFileError(f"session file '{path}' does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise SessionFileError(f"{path}: not a text file; a session file is JSON") from None
    except json.JSONDecodeError as err:
        raise SessionFileError(
            f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}"
        ) from None
    try:
        sf = parse_session(data, base_dir=path.parent)
    except SessionFileError as err:
        raise SessionFileError(f"{path}: {err}") from None
    sf.path = path
    return sf


# --------------------------------------------------------------------------- writing
def _num(v: float):
    v = float(v)
    return int(v) if v.is_integer() else v


def _settings_dict(s: SessionSettings) -> dict:
    out = {}
    for key in _SETTING_KEYS:
        value = getattr(s, key)
        if value is None:
            continue
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, tuple):
            value = list(value)
        out[key] = value
    out.update(s.extra)
    return out


def session_to_dict(session_file: SessionFile, mask_paths: dict | None = None) -> dict:
    """The JSON-ready dict of a session; ``mask_paths[(i, j)]`` is the path of object i's prompt j."""
    objects = []
    for i, obj in enumerate(session_file.objects):
        prompts = []
        for j, p in enumerate(obj.prompts):
            entry: dict[str, Any] = {"frame": int(p.frame)}
            if p.kind == "points":
                entry["points"] = [[_num(r), _num(c)] for r, c in np.asarray(p.points).reshape(-1, 2)]
                entry["labels"] = [int(v) for v in np.asarray(p.labels).reshape(-1)]
                if p.replace:
                    entry["replace"] = True
            elif p.kind == "box":
                entry["box"] = [[_num(r), _num(c)] for r, c in np.asarray(p.box).reshape(2, 2)]
            elif p.kind == "mask":
                rel = (mask_paths or {}).get((i, j), p.mask_path)
                if rel is None:
                    raise SessionFileError(f"objects[{i}].prompts[{j}]: a mask prompt needs a file")
                entry["mask"] = rel
            else:
                raise SessionFileError(f"objects[{i}].prompts[{j}]: unknown prompt kind {p.kind!r}")
            prompts.append(entry)
        objects.append({"id": int(obj.id), "name": obj.name, "prompts": prompts, **obj.extra})
    data = {"format": SESSION_FORMAT, "version": SESSION_VERSION}
    settings = _settings_dict(session_file.settings)
    if settings:
        data["settings"] = settings
    data.update(session_file.extra)
    data["objects"] = objects
    return data


def _dumps(obj, level: int = 0) -> str:
    """JSON for people: one line per setting and per prompt, objects spread out."""
    pad, end = " " * (level + 1), " " * level
    if isinstance(obj, dict):
        flat = all(not isinstance(v, dict)
                   and not (isinstance(v, list) and any(isinstance(x, dict) for x in v))
                   for v in obj.values())
        if flat and level >= 3 or not obj:  # a prompt entry
            return json.dumps(obj, ensure_ascii=False)
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {_dumps(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + end + "}"
    if isinstance(obj, list) and any(isinstance(x, dict) for x in obj):
        return "[\n" + ",\n".join(pad + _dumps(x, level + 1) for x in obj) + "\n" + end + "]"
    return json.dumps(obj, ensure_ascii=False)


def _mask_references(path: Path) -> set[str]:
    """The mask paths an existing session file refers to (empty if it is unreadable)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {p["mask"] for o in data.get("objects", []) for p in o.get("prompts", [])
                if isinstance(p, dict) and isinstance(p.get("mask"), str)}
    except (OSError, ValueError, AttributeError, TypeError):
        return set()


def write_session(path, session_file: SessionFile) -> Path:
    """Write a session file, its mask prompts as TIFFs in ``<name>_masks/`` next to it.

    Mask files are named ``obj<id>_f<frame>.tif`` (``_2``, ``_3``... for further masks on the
    same frame, or when that name is taken). The folder is named after the session file, so two
    sessions saved in one folder never overwrite each other's masks.

    The file and its masks are one unit: new masks are written under names no file uses yet
    (an existing mask file is never rewritten), then the JSON is written to a unique temporary
    name and renamed over the old one, and only then are the masks that only the old JSON used
    removed. At every moment the session file on disk refers to complete mask files; a save
    that fails leaves the earlier session exactly as it was.

    Returns
    -------
    pathlib.Path
        The session file.
    """
    import tifffile

    from napari_sam2.io.atomic import StagedOutput

    path = Path(path)
    if not path.parent.is_dir():
        raise SessionFileError(f"the folder '{path.parent}' does not exist")
    if path.is_dir():
        raise SessionFileError(f"'{path}' is a folder: give the session a file name")
    mask_dir = f"{path.stem}_masks"
    folder = path.parent / mask_dir
    old_refs = _mask_references(path) if path.is_file() else set()
    mask_paths, used, created = {}, set(), []
    try:
        for i, obj in enumerate(session_file.objects):
            for j, p in enumerate(obj.prompts):
                if p.kind != "mask":
                    continue
                if p.mask is None:
                    raise SessionFileError(f"objects[{i}].prompts[{j}]: mask prompt without mask data")
                stem = f"obj{obj.id}_f{p.frame}"
                name, k = f"{stem}.tif", 2
                while name in used or (folder / name).exists():
                    name, k = f"{stem}_{k}.tif", k + 1
                used.add(name)
                folder.mkdir(exist_ok=True)
                with StagedOutput(folder / name) as staged:
                    tifffile.imwrite(staged.temp, np.asarray(p.mask, bool).astype(np.uint8) * 255,
                                     compression="zlib")
                created.append(folder / name)
                mask_paths[(i, j)] = f"{mask_dir}/{name}"
        text = _dumps(session_to_dict(session_file, mask_paths))
        with StagedOutput(path) as staged:
            staged.temp.write_text(text + "\n", encoding="utf-8")
    except BaseException:
        for f in created:  # the old session file still refers to the old masks only
            f.unlink(missing_ok=True)
        raise
    # masks that only the replaced file used, in our folder: nothing refers to them any more
    for rel in old_refs - set(mask_paths.values()):
        old = path.parent / rel
        if Path(rel).parts[:1] == (mask_dir,) and len(Path(rel).parts) == 2 and old.is_file():
            old.unlink(missing_ok=True)
    session_file.path = path
    for (i, j), rel in mask_paths.items():
        session_file.objects[i].prompts[j].mask_path = rel
    return path


# --------------------------------------------------------------------------- engine bridge
def session_from_engine(sam2_session, settings: SessionSettings | None = None,
                        names: dict | None = None, extra: dict | None = None) -> SessionFile:
    """Capture a live :class:`~napari_sam2.engine.session.Sam2Session`'s prompts and settings.

    Parameters
    ----------
    sam2_session : Sam2Session
    settings : SessionSettings, optional
        What the caller knows (axis, channels, layer name...). Missing ``model``, ``precision``,
        ``contrast``, ``frame_shape`` and ``n_frames`` are filled from the session; the contrast
        is saved as the resolved limits, so a replay maps intensities exactly as this session
        did.
    names : dict[int, str], optional
        Object names (default ``"object <id>"``).
    extra : dict[int, dict], optional
        Extra keys per object id to keep in the file (e.g. ``{"color": "#ff0000"}``).
    """
    s = settings or SessionSettings()
    s = SessionSettings(**{**s.__dict__, "extra": dict(s.extra)})
    if s.model is None:
        s.model = getattr(sam2_session.model, "name", None)
    if s.model is not None and Path(s.model).expanduser().exists():
        # a local folder or checkpoint: absolute, so the file works from any working folder
        s.model = str(Path(s.model).expanduser().resolve())
    if s.precision is None and hasattr(sam2_session.model, "autocast_dtype"):
        dtype = sam2_session.model.autocast_dtype  # None: plain float32
        s.precision = "float32" if dtype is None else str(dtype).replace("torch.", "")
    if s.contrast is None or isinstance(s.contrast, str):
        s.contrast = np.asarray(sam2_session.contrast, dtype=float).tolist()
    rows, cols = (int(v) for v in sam2_session.frame_shape)
    s.frame_shape = (rows, cols)
    s.n_frames = int(sam2_session.n_frames)
    objects = []
    for obj_id in sam2_session.objects:
        # copies: saving sets the copies' mask_path, never the engine's own records
        prompts = [dataclasses.replace(p) for p in sam2_session.prompts(obj_id)]
        objects.append(SessionObject(int(obj_id), (names or {}).get(obj_id, f"object {obj_id}"),
                                     prompts, dict((extra or {}).get(obj_id, {}))))
    return SessionFile(objects=objects, settings=s)


def check_session_fits(session_file: SessionFile, n_frames: int, frame_shape) -> None:
    """Check the prompts against a stack before running anything.

    Raises
    ------
    SessionFileError
        If the session has no object, an object has no prompt, a prompt's frame is outside the
        stack, or the stack's frames differ in size or number from those the prompts were made on.
    """
    frame_shape = tuple(int(v) for v in frame_shape)
    where_file = f"{session_file.path}: " if session_file.path else ""
    if not session_file.objects:
        raise SessionFileError(f"{where_file}objects: the session has no object to segment")
    saved = session_file.settings.frame_shape
    if saved is not None and tuple(saved) != frame_shape:
        raise SessionFileError(
            f"{where_file}settings.frame_shape: the prompts were made on frames of "
            f"{saved[0]}x{saved[1]} pixels but the input's frames are {frame_shape[0]}x{frame_shape[1]}: "
            "is it the right image, and the right tracked axis (--axis; in the dock, Image ▸ axis)?"
        )
    saved_n = session_file.settings.n_frames
    if saved_n is not None and int(saved_n) != int(n_frames):
        raise SessionFileError(
            f"{where_file}settings.n_frames: the prompts were made on a stack of {saved_n} frames "
            f"but the input has {n_frames} along the video axis: is it the right image, and the "
            "right tracked axis (--axis; in the dock, Image ▸ axis)? (remove settings.n_frames "
            "from the file to use the prompts anyway)"
        )
    for i, obj in enumerate(session_file.objects):
        if not obj.prompts:
            raise SessionFileError(
                f"{where_file}objects[{i}]: object {obj.id} ('{obj.name}') has no prompts: give it a "
                "point, box or mask, or remove it"
            )
        for j, p in enumerate(obj.prompts):
            if not 0 <= p.frame < n_frames:
                raise SessionFileError(
                    f"{where_file}objects[{i}].prompts[{j}].frame: frame {p.frame} is out of range: "
                    f"the input has {n_frames} frames (0..{n_frames - 1}) along the video axis"
                )
            if p.kind != "mask":
                continue
            if p.mask is None:  # a mask prompt holds its pixels (read_session loads the file)
                raise SessionFileError(f"{where_file}objects[{i}].prompts[{j}].mask: no mask pixels")
            if tuple(p.mask.shape) != frame_shape:
                raise SessionFileError(
                    f"{where_file}objects[{i}].prompts[{j}].mask: the mask is {p.mask.shape[0]}x"
                    f"{p.mask.shape[1]} pixels but the input's frames are "
                    f"{frame_shape[0]}x{frame_shape[1]}"
                )


def replay(session_file: SessionFile, sam2_session, *, obj_ids=None, progress=None) -> dict:
    """Give a session's prompts to a :class:`~napari_sam2.engine.session.Sam2Session`, in order.

    Objects of the file that the engine session already has are removed first, so loading a
    file twice gives the file's prompts, not twice as many. Every prompt is given, in order; the
    engine then holds :func:`~napari_sam2.prompts.prompts_in_effect` of each object's prompts.

    Parameters
    ----------
    session_file : SessionFile or dict
        A read session (or its decoded JSON; mask paths then resolve against the working folder).
    sam2_session : Sam2Session
    obj_ids : iterable of int, optional
        Replay only these objects.
    progress : callable(done, total), optional
        Called after each prompt (each runs the network once).

    Returns
    -------
    dict[int, numpy.ndarray]
        The last mask of each object (on its last prompted frame).

    Raises
    ------
    SessionFileError
        If a prompt is refused by the engine (the message names the JSON path).
    """
    if isinstance(session_file, dict):
        session_file = parse_session(session_file)
    check_session_fits(session_file, sam2_session.n_frames, sam2_session.frame_shape)
    wanted = None if obj_ids is None else {int(i) for i in obj_ids}
    todo = [(i, o) for i, o in enumerate(session_file.objects) if wanted is None or o.id in wanted]
    total = sum(len(o.prompts) for _, o in todo)
    done, last = 0, {}
    for i, obj in todo:
        if obj.id in sam2_session.objects:
            sam2_session.remove_object(obj.id)
        for j, p in enumerate(obj.prompts):
            try:
                if p.kind == "points":
                    last[obj.id] = sam2_session.add_points(p.frame, obj.id, p.points, p.labels,
                                                           replace=p.replace)
                elif p.kind == "box":
                    last[obj.id] = sam2_session.add_box(p.frame, obj.id, p.box)
                else:
                    last[obj.id] = sam2_session.add_mask(p.frame, obj.id, p.mask)
            except ValueError as err:
                where = f"{session_file.path}: " if session_file.path else ""
                raise SessionFileError(f"{where}objects[{i}].prompts[{j}]: {err}") from None
            done += 1
            if progress is not None:
                progress(done, total)
    return last

