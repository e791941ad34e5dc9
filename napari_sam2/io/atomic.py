"""Outputs that are either complete or absent, and output paths checked before any work.

Every file napari-sam2 writes (labels TIFF or OME-Zarr, statistics CSV, session JSON) goes
through :class:`StagedOutput`: it is written under a unique hidden name beside its target
(``.NAME.<pid>-<random>.writing``, on the same disk, so the final rename is atomic) and renamed
into place only when complete. So:

* an existing output is replaced only by a complete new one, never emptied first;
* two runs writing the same output never share a temporary name;
* a run that fails or is interrupted leaves the earlier output untouched; what it finished
  can be kept as ``NAME.partial.tif`` / ``NAME.partial.zarr`` (:meth:`StagedOutput.keep_partial`).

Folders (zarr outputs) are replaced only if napari-sam2 wrote them: our outputs carry a
``"napari-sam2"`` entry in their zarr attributes (:func:`mark_as_ours`, :func:`is_our_output`).

:func:`check_output_paths` checks a set of outputs against each other and against the inputs
before a model is loaded: writable folder, file where a file is meant and folder where a folder
is meant, and no output equal to, inside or containing an input or another output.

Nothing here imports torch, Qt or napari (nor zarr: attributes are read as JSON).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from pathlib import Path

from napari_sam2.errors import OutputPathError

__all__ = [
    "StagedOutput",
    "OUTPUT_MARKER",
    "partial_path",
    "staging_path",
    "is_our_output",
    "mark_as_ours",
    "check_output_path",
    "check_output_paths",
]

#: Key of the zarr attribute that marks a folder as written by napari-sam2.
OUTPUT_MARKER = "napari-sam2"

#: Suffixes kept together when naming partial outputs (``a.ome.zarr`` -> ``a.partial.ome.zarr``).
_COMPOUND_SUFFIXES = (".ome.zarr", ".ome.tiff", ".ome.tif")


# --------------------------------------------------------------------------- names
def _split_name(name: str) -> tuple[str, str]:
    lower = name.lower()
    for suffix in _COMPOUND_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    stem, suffix = os.path.splitext(name)
    return stem, suffix


def partial_path(target) -> Path:
    """Where the finished part of an interrupted output goes: ``NAME.partial.SUFFIX``.

    Examples
    --------
    >>> partial_path("out/labels.tif").name
    'labels.partial.tif'
    >>> partial_path("movie.ome.zarr").name
    'movie.partial.ome.zarr'
    """
    target = Path(str(target).rstrip("/\\"))
    stem, suffix = _split_name(target.name)
    return target.with_name(f"{stem}.partial{suffix}")


def staging_path(target) -> Path:
    """A unique hidden name beside ``target`` (same folder, so renaming it is atomic)."""
    target = Path(str(target).rstrip("/\\"))
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    return target.with_name(f".{target.name}.{token}.writing")


# --------------------------------------------------------------------------- ownership
def _zarr_attributes(folder: Path) -> dict:
    """The attributes of a zarr group (format 2 ``.zattrs`` or format 3 ``zarr.json``)."""
    for name, pick in ((".zattrs", lambda d: d), ("zarr.json", lambda d: d.get("attributes", {}))):
        f = folder / name
        if f.is_file():
            try:
                data = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return {}
            return pick(data) if isinstance(data, dict) else {}
    return {}


def is_our_output(path) -> bool:
    """Whether ``path`` is a folder that napari-sam2 wrote (its zarr attributes carry our mark)."""
    path = Path(path)
    return path.is_dir() and isinstance(_zarr_attributes(path).get(OUTPUT_MARKER), dict)


def mark_as_ours(attrs, kind: str) -> None:
    """Add our mark to a zarr group's attributes (``attrs`` is ``group.attrs``)."""
    from napari_sam2 import __version__

    attrs[OUTPUT_MARKER] = {"kind": str(kind), "version": __version__}


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink()
        except FileNotFoundError:
            pass


def _put_in_place(temp: Path, target: Path, *, folder: bool) -> None:
    """Rename ``temp`` to ``target``, replacing what is there (a folder only if it is ours)."""
    if not folder and not target.is_dir():
        os.replace(temp, target)  # atomic: readers see the old file or the new one
        return
    if target.is_dir() and not target.is_symlink():
        if not folder or not is_our_output(target):
            raise OutputPathError(
                f"'{target}' is a folder that napari-sam2 did not write: it is left as it is; "
                "choose another output name or move the folder away"
            )
        aside = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.old")
        os.rename(target, aside)
        try:
            os.rename(temp, target)
        except BaseException:
            os.rename(aside, target)  # put the earlier output back
            raise
        shutil.rmtree(aside, ignore_errors=True)
        return
    if target.exists() or target.is_symlink():
        if folder:
            raise OutputPathError(f"'{target}' is a file; a folder output cannot replace it")
        os.replace(temp, target)
        return
    os.rename(temp, target)


class StagedOutput:
    r"""One output written under a unique temporary name and renamed into place when complete.

    Parameters
    ----------
    target : str or pathlib.Path
        The final path.
    folder : bool
        The output is a folder (zarr) rather than a file.

    Attributes
    ----------
    target : pathlib.Path
    temp : pathlib.Path
        Where to write (nothing is created there by this class).
    state : {"open", "committed", "partial", "discarded"}

    Examples
    --------
    >>> with StagedOutput("stats.csv") as out:          # doctest: +SKIP
    ...     out.temp.write_text("frame,area\n")
    >>> # stats.csv now exists, complete; on an exception it is left untouched

    Notes
    -----
    As a context manager, a block that raises discards what was written (use
    :meth:`keep_partial` yourself to keep it).
    """

    def __init__(self, target, *, folder: bool = False):
        self.target = Path(str(target).rstrip("/\\"))
        self.folder = bool(folder)
        self.temp = staging_path(self.target)
        self.state = "open"

    def commit(self) -> Path:
        """Rename the complete output into place; returns the target."""
        self._require_open()
        _put_in_place(self.temp, self.target, folder=self.folder)
        self.state = "committed"
        return self.target

    def keep_partial(self) -> Path | None:
        """Move what was written to :func:`partial_path` (replacing an earlier partial output).

        Returns
        -------
        pathlib.Path or None
            The partial output, or None if nothing was written (or it could not be moved;
            the temporary files are then removed).
        """
        self._require_open()
        if not self.temp.exists():
            self.state = "discarded"
            return None
        dest = partial_path(self.target)
        k = 2
        # never replace something that is not ours: take the next free name instead
        while dest.is_dir() and not is_our_output(dest) or (self.folder and dest.is_file()) or (
                not self.folder and dest.is_dir()):
            stem, suffix = _split_name(partial_path(self.target).name)
            dest = self.target.with_name(f"{stem}-{k}{suffix}")
            k += 1
        try:
            _put_in_place(self.temp, dest, folder=self.folder)
        except (OSError, OutputPathError):
            self.discard()
            return None
        self.state = "partial"
        return dest

    def discard(self) -> None:
        """Remove what was written; the target is untouched."""
        if self.state in ("committed", "partial"):
            return
        _remove(self.temp)
        self.state = "discarded"

    def _require_open(self):
        if self.state != "open":
            raise OutputPathError(f"the output '{self.target}' is already {self.state}")

    def __enter__(self) -> StagedOutput:
        return self

    def __exit__(self, exc_type, exc, tb):
        if self.state != "open":
            return False
        if exc_type is None:
            self.commit()
        else:
            self.discard()
        return False


# --------------------------------------------------------------------------- path checks
def _label(option) -> str:
    return f"{option} " if option else ""


def check_output_path(path, *, folder: bool = False, option: str = "") -> Path:
    """Check that one output can be written, without writing it.

    Parameters
    ----------
    path : str or pathlib.Path
    folder : bool
        The output is a folder (zarr): an existing folder must be one of ours, a file is refused.
    option : str
        How the user named it (e.g. ``"--out"``), for messages.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    OutputPathError
        If the folder it goes in is missing or not writable, if it is a folder where a file is
        meant (or the reverse), or if it is a folder napari-sam2 did not write.
    """
    path = Path(str(path).rstrip("/\\"))
    what = _label(option)
    parent = path.parent
    if not parent.is_dir():
        raise OutputPathError(f"{option + ': ' if option else ''}the folder '{parent}' does not exist")
    if folder:
        if path.is_file():
            raise OutputPathError(f"{what}'{path}' is a file, but this output is a folder (zarr): "
                                  "choose another name or move the file away")
        if path.is_dir() and not is_our_output(path):
            raise OutputPathError(f"{what}'{path}' is a folder that napari-sam2 did not write: it is "
                                  "never replaced; choose another name or move the folder away")
    elif path.is_dir():
        raise OutputPathError(f"{what}'{path}' is a folder, but this output is a file: give a file "
                              "name, e.g. " + str(path / "output"))
    try:  # the real test: permissions, read-only mounts, ACLs, quotas on inodes
        fd, probe = tempfile.mkstemp(prefix=".napari-sam2-probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise OutputPathError(f"{option + ': ' if option else ''}cannot write in the folder "
                              f"'{parent}': {err.strerror or err}") from None
    return path


def _resolved(path) -> Path:
    try:
        return Path(path).expanduser().resolve()
    except OSError:
        return Path(os.path.abspath(Path(path).expanduser()))


def _relation(a: Path, b: Path) -> str | None:
    """How path ``a`` relates to path ``b``: "is", "contains", "is inside" or None."""
    ra, rb = _resolved(a), _resolved(b)
    if ra == rb:
        return "is"
    try:
        if a.exists() and b.exists() and os.path.samefile(a, b):  # hard links, bind mounts
            return "is"
    except OSError:
        pass
    if ra in rb.parents:
        return "contains"
    if rb in ra.parents:
        return "is inside"
    return None


def check_output_paths(outputs, inputs=()) -> None:
    """Check outputs against each other and against the inputs, before any work starts.

    Parameters
    ----------
    outputs : iterable of (option, path, kind)
        ``option`` names the output for messages (``"--out"``), ``kind`` is ``"file"``,
        ``"folder"`` (checked with :func:`check_output_path`) or ``"related"`` (a folder that
        is written into, e.g. a session's masks: only checked against the other paths).
        Entries whose path is None are skipped.
    inputs : iterable of (what, path)
        Everything read: the image, session files, mask files, a local model...

    Raises
    ------
    OutputPathError
        Naming the first problem and the fix.
    """
    outs = [(opt, Path(str(p).rstrip("/\\")), kind) for opt, p, kind in outputs if p is not None]
    ins = [(what, Path(p)) for what, p in inputs if p is not None]
    for opt, path, _ in outs:
        for what, inp in ins:
            rel = _relation(path, inp)
            if rel is not None:
                raise OutputPathError(
                    f"{_label(opt)}'{path}' {rel} the {what} '{inp}': an output never replaces what "
                    "is read; choose another output name")
    for i, (opt_a, a, _) in enumerate(outs):
        for opt_b, b, _ in outs[i + 1:]:
            rel = _relation(a, b)
            if rel is not None:
                raise OutputPathError(
                    f"{_label(opt_a)}'{a}' {rel} {opt_b} '{b}': each output needs its own name")
    # relations first: "is the input" says more than "is a folder not ours"
    for opt, path, kind in outs:
        if kind in ("file", "folder"):
            check_output_path(path, folder=kind == "folder", option=opt)
