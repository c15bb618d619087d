"""The batch's two kinds of error, and how a series is named in their messages.

A problem with the input as a whole stops the run (`BatchInputError`); a problem
with one series fails that series only (`SeriesError`), and the others go on.
"""

from __future__ import annotations

from typing import Any


class BatchInputError(ValueError):
    """The input as a whole cannot be used (nothing can be forecast from it)."""


class SeriesError(ValueError):
    """One series cannot be forecast; the message names the series and, if any, the row."""


def series_label(uid: Any) -> str:
    """A series id as messages show it: strings quoted, so that ids "7" and 7 differ."""
    return repr(uid) if isinstance(uid, str) else str(uid)
