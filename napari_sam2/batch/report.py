"""The batch report, completion records and the files a stack leaves while it runs.

* ``DIR/batch-report.json``: a list with one entry per stack, ``{"input", "output", "status":
  "done"|"failed"|"skipped", "error", "frames", "seconds", ...}``, rewritten (temporary file,
  then rename) each time a stack finishes, so it is always complete JSON.
* ``DIR/.napari-sam2-batch/<output name>.json``: the completion record a worker writes right
  after moving a stack's outputs into place. A rerun trusts an output only through it.
* ``DIR/.<output name>.partial-<token>/<output name>``: what a running stack writes; moved to
  the output name only once complete, so an interrupted stack never leaves a file that looks done.

Nothing here imports torch or dask.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["REPORT_NAME", "write_json_atomic", "read_record", "plan_stack", "partial_name",
           "remove_partials", "entry"]

REPORT_NAME = "batch-report.json"
_PARTIAL = ".partial-"


def write_json_atomic(path, data) -> Path:
    """Write JSON to a temporary file in the same folder, flush it to disk, rename it into place."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the report is for everyone
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, default=str)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_record(job) -> dict | None:
    """The completion record of a stack's outputs, or None (missing or unreadable)."""
    try:
        record = json.loads(job.record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def plan_stack(job) -> tuple[str, dict | None, str | None]:
    """What a (re)run does with a stack.

    Returns
    -------
    ("run", None, None)
        Nothing of it exists yet (or only partial files of an interrupted run).
    ("skip", record, None)
        Its outputs exist and their record has this input and these settings.
    ("conflict", record or None, message)
        An output exists that was not made from this input with these settings; it is never
        overwritten, the stack fails with ``message``.
    """
    existing = [p for p in job.outputs() if p.exists()]
    record = read_record(job)
    if record is not None and record.get("key") == job.key and len(existing) == len(job.outputs()):
        return "skip", record, None
    if not existing:
        return "run", None, None
    names = ", ".join(str(p) for p in existing)
    why = ("was made from another input or with other settings" if record is not None
           else "exists and was not written by a batch run")
    return "conflict", record, (f"{names} {why}; it is never overwritten: move it away or "
                                "write to another --out-dir")


def partial_name(final: Path, token: str) -> Path:
    """Where an attempt writes ``final``: under its final name in a hidden folder beside it.

    The name inside is the final one because writers record it (an OME-Zarr's image name);
    the folder is created by the caller and removed with :func:`remove_partials`.
    """
    return final.parent / f".{final.name}{_PARTIAL}{token}" / final.name


def remove_partials(job) -> int:
    """Delete what interrupted attempts of this stack left (only while no attempt runs)."""
    n = 0
    for final in job.outputs():
        for p in final.parent.glob(f".{final.name}{_PARTIAL}*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            n += 1
    return n


def entry(job, status, *, error=None, frames=None, seconds=None, **extra) -> dict:
    """One report entry."""
    return {"input": job.input, "output": str(job.output), "status": status, "error": error,
            "frames": frames, "seconds": None if seconds is None else round(float(seconds), 3),
            "stats": None if job.stats is None else str(job.stats), "prompts": job.prompts,
            "seeds": getattr(job, "seeds", None),
            "key": job.key, "input_identity": job.identity, "settings": job.settings, **extra}
