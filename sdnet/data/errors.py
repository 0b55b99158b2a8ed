"""The errors of :mod:`sdnet.data`, each naming the file or places concerned.

``DataError`` (a ``ValueError``): a file was found but is not what it should be (truncated,
corrupt, wrong shape or count, a refused pickle). ``ChecksumError``: a downloaded file does not
match its published SHA-256. ``DataNotFound`` (a ``FileNotFoundError``): the files are nowhere
sdnet looked and could not be downloaded; the message lists every place and mirror tried.
"""

from __future__ import annotations

__all__ = ["DataError", "ChecksumError", "DataNotFound"]


class DataError(ValueError):
    """A dataset file exists but is truncated, corrupt, or not the expected dataset."""


class ChecksumError(DataError):
    """A downloaded file's SHA-256 is not the published one (nothing was kept)."""


class DataNotFound(FileNotFoundError):
    """The dataset is in none of the searched places and could not be downloaded."""
