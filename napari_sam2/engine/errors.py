"""Errors the engine raises for bad input.

They subclass :class:`ValueError`, so callers that catch ``ValueError`` (the command line turns
them into one line and exit code 2, the widget into a notification) need not know them.
"""


class Sam2InputError(ValueError):
    """Bad input to the engine: the message names the problem and how to fix it."""


class BatchInputError(ValueError):
    """A batch cannot start as asked (no inputs, a bad list file, outputs that collide...)."""
