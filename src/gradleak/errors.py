"""Exceptions that name what was wrong, so a user can fix the input rather than read a traceback."""

from __future__ import annotations


class GradleakError(Exception):
    """Base class of every error gradleak raises on purpose."""


class CaptureError(GradleakError, ValueError):
    """A capture file or Observation is malformed: wrong file, missing key, bad shape, NaN."""


class ConfigError(GradleakError, ValueError):
    """A configuration value, name or parameter is invalid."""


class DataError(GradleakError, ValueError):
    """A user data file does not hold what its format promises."""


class AttackError(GradleakError, RuntimeError):
    """An attack ended without a result it may report: e.g. its candidates diverged to NaN or Inf."""
