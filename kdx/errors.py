"""The one exception type kdx raises for problems a user can cause and fix."""

from __future__ import annotations


class KdxError(Exception):
    """A user-facing error: the message names the problem and how to fix it.

    The CLI catches this type and prints the message without a traceback; anything else is a
    bug and keeps its traceback.
    """
