"""User-facing errors.

Every error a user can cause (bad file, missing dataset, unreachable weights, bad option)
is a :class:`PointcalipError`. Its message is one line that says what went wrong, where,
and what to do. The CLI prints it without a traceback and exits with status 2.
"""

from __future__ import annotations


class PointcalipError(Exception):
    """Base class of every user-facing error (CLI exit status 2)."""


class PointCloudError(PointcalipError):
    """A point-cloud file or array cannot be used."""


class MissingFileError(PointCloudError):
    """The path does not exist."""


class UnsupportedFormatError(PointCloudError):
    """The file extension is not one we can read."""


class UnreadableFileError(PointCloudError):
    """The file exists but cannot be parsed (corrupt, truncated, wrong content)."""


class EmptyCloudError(PointCloudError):
    """The cloud has no points."""


class NonFiniteError(PointCloudError):
    """The cloud has NaN or Inf coordinates."""


class DegenerateCloudError(PointCloudError):
    """All points of the cloud are identical."""


class DatasetError(PointcalipError):
    """A dataset folder is missing or incomplete."""


class DownloadError(PointcalipError):
    """A download failed or fetched the wrong bytes."""


class WeightsError(PointcalipError):
    """CLIP weights cannot be found or loaded."""


class ConfigError(PointcalipError):
    """A configuration value or command-line option is invalid."""


class ReadLimitError(PointCloudError):
    """A file needs more points or bytes than the read limits allow (``--max-points``, ``--max-bytes``)."""
