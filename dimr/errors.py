"""Errors that name the problem and the fix; the CLI prints them without a traceback."""

# sysexits.h EX_TEMPFAIL: `dimr train` saved a checkpoint on a signal and stopped; the launcher
# (workflow/scripts/submit.py) requeues the job and the same command resumes.
EXIT_REQUEUE = 75


class DimrError(Exception):
    """A user-facing error: bad input, a missing file, a config that cannot be honoured."""


class ConfigError(DimrError):
    """A malformed or inconsistent configuration (unknown key, wrong type, bad value)."""


class MissingFileError(DimrError):
    """A required file (data set, weights, reference statistics) is missing or has the wrong hash."""


class CheckpointError(DimrError):
    """A checkpoint is corrupted, truncated, or belongs to a run with a different config."""
