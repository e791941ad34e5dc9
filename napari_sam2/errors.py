"""The errors napari-sam2 raises for bad input, all in one place.

Every one subclasses :class:`ValueError`: the command line turns any of them into one line and
exit code 2, the widget into a notification, and callers that catch ``ValueError`` need not know
them. Each message names the problem and how to fix it.

This module imports nothing, so any part of napari-sam2 (and any caller) can import it without
loading torch, Qt or napari.
"""

from __future__ import annotations

__all__ = [
    "Sam2InputError",
    "BatchInputError",
    "ModelLoadError",
    "CheckpointError",
    "SeedError",
    "CliError",
    "ImageReadError",
    "LabelWriteError",
    "OutputPathError",
    "SessionFileError",
    "one_line",
]


def one_line(err: BaseException) -> str:
    """An error's message on one line (its type's name when it has none), for messages and logs."""
    return " ".join(str(err).split()) or type(err).__name__


# --------------------------------------------------------------------------- engine
class Sam2InputError(ValueError):
    """Bad input to the engine: the message names the problem and how to fix it."""


class ModelLoadError(ValueError):
    """A model could not be found, downloaded or read; the message says how to fix it."""


class CheckpointError(ModelLoadError):
    """A checkpoint file could not be read or does not hold SAM 2 weights."""


# --------------------------------------------------------------------------- command line and batches
class CliError(ValueError):
    """A problem with the command line itself (output path, bounds...)."""


class SeedError(ValueError):
    """A seed option or file does not fit the input; the message names the fix."""


class BatchInputError(ValueError):
    """A batch cannot start as asked (no inputs, a bad list file, outputs that collide...)."""


# --------------------------------------------------------------------------- files
class ImageReadError(ValueError):
    """A file or folder cannot be read as an image stack; the message says why and what to do."""


class LabelWriteError(ValueError):
    """Labels cannot be written as asked (unknown format, id too large, missing folder...)."""


class OutputPathError(ValueError):
    """An output cannot be written where asked; the message names the path and the fix."""


class SessionFileError(ValueError):
    """A session file is unreadable, invalid, or does not fit the image; the message says where."""
