"""The model's own user errors: a data set or the embedded corpus that cannot be used.

Both are `common.errors.UserError`s, so every CLI says them in one line and exits 2.
"""

from __future__ import annotations

from common.errors import UserError


class DataError(UserError):
    """A data set, metadata line or audio file that cannot be used."""


class CorpusError(UserError):
    """The embedded corpus cannot be built or read."""
