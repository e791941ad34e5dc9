"""The stacks of a batch: list files, output names, input identity and settings keys.

A stack is done when its outputs exist *and* a completion record for them says they were made
from this very input (path, size, modification time) with these very settings (every option
that changes the labels, the content of the prompts file and its mask files, and the content
of the stack's seed label image). A rerun skips such stacks and never writes over an output that
has no matching record.

Nothing here imports torch or dask.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from napari_sam2.errors import BatchInputError

__all__ = ["StackJob", "read_list", "make_jobs", "input_identity", "prompts_digest", "seeds_digest",
           "find_seed_file", "SEED_NAMES", "RECORD_DIR"]

#: Hidden folder in the output folder holding one completion record per finished stack.
RECORD_DIR = ".napari-sam2-batch"
#: Columns a CSV list may have (``input`` is required).
LIST_COLUMNS = ("input", "prompts", "seeds", "output")
#: Per-stack options that change the labels (recorded in the settings key).
STACK_OPTIONS = ("model", "device", "axis", "direction", "start", "stop", "channels", "contrast")
#: Seeding options (recorded in the key only when seeds or --auto-seed are used, so the keys of
#: prompt-only batches do not depend on them).
SEED_OPTIONS = ("seed_frame",)
#: Recorded in the key only when not "auto", so that the keys of earlier batches stay the same.
PRECISION_OPTIONS = ("precision",)
AUTO_SEED_OPTIONS = ("auto_seed", "auto_seed_points", "auto_seed_min_area", "auto_seed_iou",
                     "auto_seed_stability")
#: Names a stack's seed label image may have in ``--seeds-dir`` (``{stem}`` is the input's stem).
SEED_NAMES = ("{stem}.tif", "{stem}.tiff", "{stem}_labels.tif", "{stem}_labels.tiff", "{stem}.npy",
              "{stem}_labels.npy")
_OUTPUT_SUFFIX = {"tif": "_labels.tif", "zarr": "_labels.zarr"}
_MULTI_SUFFIXES = (".ome.tiff", ".ome.tif", ".ome.zarr", ".nii.gz")


@dataclass
class StackJob:
    """One stack to segment and where its results go.

    Attributes
    ----------
    input : str
        The stack, as given (a file or folder).
    output : pathlib.Path
        The label image to write.
    stats : pathlib.Path or None
        Per-object statistics CSV written beside it (with ``--stats``).
    prompts : str or None
        Session file whose prompts are replayed on this stack.
    seeds : str or None
        Label image seeding this stack's objects (``segment --seeds``).
    options : dict
        ``segment`` options for this stack (see :data:`STACK_OPTIONS`).
    key : str
        Digest of the input identity and the settings; equal keys mean equal results.
    settings : dict
        What the key was computed from, kept in the report.
    error : str or None
        Why this stack cannot run (no seed file and no prompts); it is reported as failed.
    """

    input: str
    output: Path
    stats: Path | None
    prompts: str | None
    options: dict = field(default_factory=dict)
    key: str = ""
    settings: dict = field(default_factory=dict)
    identity: dict | None = None
    seeds: str | None = None
    error: str | None = None

    @property
    def record_path(self) -> Path:
        """The completion record of this stack's outputs."""
        return self.output.parent / RECORD_DIR / f"{self.output.name}.json"

    def outputs(self) -> list[Path]:
        """The files this stack writes: its label image, and its statistics CSV if asked."""
        return [self.output] + ([self.stats] if self.stats is not None else [])


# --------------------------------------------------------------------------- list files
def read_list(path) -> list[dict]:
    """Read a list of stacks: one path per line, or a CSV with a header row.

    Lines: blank lines and lines starting with ``#`` are ignored. CSV (a ``.csv`` file): an
    ``input`` column, optionally ``prompts`` (a session file for that stack), ``seeds`` (a
    label image seeding it) and ``output`` (the label image name, in the output folder). Relative
    paths are relative to the list file's folder.

    Returns
    -------
    list of dict
        ``{"input": ..., "prompts": ..., "seeds": ..., "output": ...}`` per stack (None when not given).
    """
    path = Path(path)
    if not path.is_file():
        raise BatchInputError(f"--list '{path}' does not exist")
    base = path.parent

    def resolve(value):
        value = (value or "").strip()
        if not value:
            return None
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base / p)

    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() != ".csv":
        return [{"input": resolve(line), "prompts": None, "seeds": None, "output": None}
                for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    reader = csv.DictReader(text.splitlines())
    columns = [c.strip() for c in (reader.fieldnames or [])]
    if "input" not in columns:
        raise BatchInputError(f"--list '{path}': a CSV list needs a header row with an 'input' column "
                              "(and optionally 'prompts', 'seeds', 'output'); "
                              f"found {columns or 'no header'}")
    unknown = [c for c in columns if c not in LIST_COLUMNS]
    if unknown:
        raise BatchInputError(f"--list '{path}': unknown column(s) {', '.join(unknown)}; "
                              f"the columns are {', '.join(LIST_COLUMNS)}")
    rows = []
    for n, row in enumerate(reader, start=2):
        row = {k.strip(): v for k, v in row.items() if k is not None}
        if not (row.get("input") or "").strip():
            raise BatchInputError(f"--list '{path}', line {n}: the 'input' column is empty")
        output = (row.get("output") or "").strip() or None
        rows.append({"input": resolve(row["input"]), "prompts": resolve(row.get("prompts")),
                     "seeds": resolve(row.get("seeds")), "output": output})
    return rows


# --------------------------------------------------------------------------- identity
def input_identity(path) -> dict | None:
    """Path, size and modification time of a file, or of all files under a folder (zarr, PNGs).

    None when the path does not exist (the stack will fail with a clear error).
    """
    p = Path(path)
    try:
        if p.is_dir():
            n, size, mtime = 0, 0, 0
            for root, _, files in os.walk(p):
                for name in files:
                    st = os.stat(os.path.join(root, name))
                    n, size, mtime = n + 1, size + st.st_size, max(mtime, st.st_mtime_ns)
            return {"path": str(p.resolve()), "files": n, "size": size, "mtime_ns": mtime}
        st = p.stat()
    except OSError:
        return None
    return {"path": str(p.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def prompts_digest(path) -> str | None:
    """SHA-256 of a session file and of the mask files it names (what its replay depends on)."""
    if path is None:
        return None
    p = Path(path)
    h = hashlib.sha256()
    try:
        raw = p.read_bytes()
    except OSError:
        return None
    h.update(raw)
    try:
        data = json.loads(raw)
        objects = data.get("objects", []) if isinstance(data, dict) else []
        for obj in objects:
            for prompt in (obj.get("prompts", []) if isinstance(obj, dict) else []):
                rel = prompt.get("mask") if isinstance(prompt, dict) else None
                if isinstance(rel, str):
                    h.update(rel.encode())
                    try:
                        h.update((p.parent / rel).read_bytes())
                    except OSError:
                        h.update(b"<missing>")
    except (ValueError, AttributeError):
        pass  # not valid JSON: the stack will fail with the session reader's message
    return h.hexdigest()


def seeds_digest(path) -> dict | None:
    """Identity of a seed label image, None when it does not exist.

    Its path and the SHA-256 of its content (or, for a folder such as a zarr, the size and
    modification time of its files).
    """
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        return input_identity(p)
    h = hashlib.sha256()
    try:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError:
        return None
    return {"path": str(p.resolve()), "sha256": h.hexdigest()}


def find_seed_file(seeds_dir, source: str) -> tuple[str | None, str | None]:
    """The seed label image of a stack in ``seeds_dir`` (see :data:`SEED_NAMES`).

    Returns
    -------
    (path or None, problem or None)
        The file found; or None and why none was taken (none there, or several).
    """
    stem = _stem(source)
    try:
        own = Path(source).resolve()
    except OSError:
        own = None
    found = []
    for pattern in SEED_NAMES:
        p = Path(seeds_dir) / pattern.format(stem=stem)
        if p.is_file() and p.resolve() != own:  # --seeds-dir may be the input folder
            found.append(p)
    if len(found) > 1:
        return None, (f"several seed files for '{source}' in --seeds-dir '{seeds_dir}' "
                      f"({', '.join(p.name for p in found)}): keep one")
    if not found:
        names = ", ".join(n.format(stem=stem) for n in SEED_NAMES)
        return None, f"no seed file for '{source}' in --seeds-dir '{seeds_dir}' (looked for {names})"
    return str(found[0]), None


def _model_identity(model):
    """A local model folder or file changes the results when its files change."""
    if model is None:
        return None
    p = Path(model).expanduser()
    if p.exists():
        return {"model": str(p.resolve()), "files": input_identity(p)}
    return model


def _stem(path: str) -> str:
    name = Path(path.rstrip("/\\")).name
    lower = name.lower()
    for suffix in _MULTI_SUFFIXES:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem if Path(name).suffix else name


def _key(identity, settings) -> str:
    blob = json.dumps({"input": identity, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


# --------------------------------------------------------------------------- jobs
def make_jobs(entries, out_dir, *, prompts=None, seeds_dir=None, options=None, stats=False,
              fmt="tif") -> list[StackJob]:
    """One :class:`StackJob` per input, with output names and settings keys.

    Parameters
    ----------
    entries : list of str or dict
        Stack paths, or dicts from :func:`read_list`.
    out_dir : pathlib.Path
        The output folder.
    prompts : str, optional
        Session file for stacks without their own.
    seeds_dir : str, optional
        Folder with one seed label image per stack (:func:`find_seed_file`), for stacks without
        their own (``seeds`` column). A stack with neither seeds nor prompts gets ``error``.
    options : dict
        The ``segment`` options (:data:`STACK_OPTIONS`, :data:`SEED_OPTIONS`,
        :data:`AUTO_SEED_OPTIONS`).
    stats : bool
        Also write ``<stem>_stats.csv``.
    fmt : {"tif", "zarr"}

    Raises
    ------
    BatchInputError
        No inputs, a stack without prompts or seeds (and no ``seeds_dir``), seeds with
        ``auto_seed``, an unknown format, or two stacks with one output.
    """
    if fmt not in _OUTPUT_SUFFIX:
        raise BatchInputError(f"--format {fmt}: choose tif or zarr")
    out_dir = Path(out_dir)
    given = options or {}
    options = {k: given.get(k) for k in STACK_OPTIONS + PRECISION_OPTIONS + SEED_OPTIONS + AUTO_SEED_OPTIONS}
    auto = options["auto_seed"] is not None
    if not entries:
        raise BatchInputError("no stacks to segment: give INPUT paths or --list FILE")
    jobs: list[StackJob] = []
    by_output: dict[str, str] = {}
    cached_digests: dict = {}
    for entry in entries:
        entry = {"input": str(entry)} if not isinstance(entry, dict) else entry
        source = str(entry["input"])
        session = entry.get("prompts") or prompts
        seeds, problem = entry.get("seeds"), None
        if seeds is not None and auto:
            raise BatchInputError(f"'{source}' has seeds in the --list CSV and --auto-seed is given: "
                                  "choose one (as for segment --seeds / --auto-seed)")
        if seeds is None and seeds_dir is not None:
            seeds, problem = find_seed_file(seeds_dir, source)
            if seeds is None and session is not None and (problem or "").startswith("no seed file"):
                problem = None  # prompts alone, as `segment --prompts`
            elif seeds is None and session is None:
                problem = f"{problem}, and no prompts (--prompts or a 'prompts' column)"
        if session is None and seeds is None and not auto and problem is None:
            raise BatchInputError(f"no prompts for '{source}': give --prompts SESSION.json, "
                                  "--seeds-dir DIR or --auto-seed N, or a 'prompts' or 'seeds' "
                                  "column in the --list CSV")
        name = entry.get("output")
        if name:
            output = out_dir / name
            if Path(name).suffix.lower() not in (".tif", ".tiff", ".zarr"):
                raise BatchInputError(f"output '{name}' for '{source}': name it .tif, .tiff or .zarr")
            stem = _stem(name).removesuffix("_labels")
        else:
            stem = _stem(source)
            output = out_dir / f"{stem}{_OUTPUT_SUFFIX[fmt]}"
        if output in by_output:
            raise BatchInputError(
                f"'{by_output[output]}' and '{source}' would both write {output}: give the stacks "
                "distinct names, or name each output in a --list CSV with an 'output' column")
        by_output[output] = source
        stats_path = out_dir / f"{stem}_stats.csv" if stats else None
        if session is not None and session not in cached_digests:
            cached_digests[session] = prompts_digest(session)
        identity = input_identity(source)
        settings = {k: options[k] for k in STACK_OPTIONS}
        settings.update(model=_model_identity(options["model"]), prompts=None if session is None else {
            "path": str(Path(session).resolve()), "sha256": cached_digests[session]})
        settings.update({k: options[k] for k in PRECISION_OPTIONS if options[k] not in (None, "auto")})
        if seeds is not None:  # changed seeds (same name, new content) give another key
            settings.update({k: options[k] for k in SEED_OPTIONS},
                            seeds=seeds_digest(seeds) or {"path": seeds})
        if auto:
            settings.update({k: options[k] for k in AUTO_SEED_OPTIONS})
        settings.update(format="zarr" if output.suffix.lower() == ".zarr" else "tif", stats=bool(stats))
        jobs.append(StackJob(input=source, output=output, stats=stats_path,
                             prompts=None if session is None else str(session), seeds=seeds,
                             options={**options, **({} if seeds else {"seed_frame": None})},
                             key=_key(identity, settings), settings=settings,
                             identity=identity, error=problem))
    return jobs
