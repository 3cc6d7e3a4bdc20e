"""The one error type for CT input that cannot be used."""

from __future__ import annotations


class CTInputError(ValueError):
    """A CT file or series is unreadable or not a plausible CT in HU.

    The message always names the file (or folder) and says what was wrong, so
    a user dropping scans into ``data/01_raw`` knows which one to fix.
    """
