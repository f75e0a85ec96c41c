"""The one exception tree of :mod:`recommender`.

Every error the library raises on purpose derives from :class:`RecommenderError`; the CLI catches
that class only and prints its message on one line, so a bug keeps its traceback while bad input
never shows one::

    RecommenderError
    ├── InputError (also ValueError)        bad input given by the user
    │   ├── FlowSourceError                 a flow file is missing, unreadable or unrecognisable
    │   │   └── NoFlowsError                a scheduled job found no flow file in its window
    │   ├── FlowFormatError                 a file's content does not fit its format as a whole
    │   ├── SchemaError                     a table does not fit the canonical flow schema
    │   └── ConfigError                     an option or configuration file is invalid
    ├── SynthesisError                      policies could not be derived from the flows
    ├── StorageError                        object storage or a folder could not be read/written
    ├── GitOpsError                         the policy tree could not be committed or pushed
    └── UnsupportedDialectError (ValueError) a policy dialect that is not implemented

Messages are whole sentences that name the file, row or field and, where there is one, the fix.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FlowFormatError",
    "FlowSourceError",
    "GitOpsError",
    "InputError",
    "NoFlowsError",
    "RecommenderError",
    "SchemaError",
    "StorageError",
    "SynthesisError",
    "UnsupportedDialectError",
]


class RecommenderError(Exception):
    """Base class of every error raised on purpose by :mod:`recommender`."""


class InputError(RecommenderError, ValueError):
    """The user's input (a file, a table, an option) cannot be used."""


class FlowSourceError(InputError):
    """A flow file is missing, unreadable, or of no format the tool knows."""


class NoFlowsError(FlowSourceError):
    """A scheduled job found no flow file in its window (``recommend job`` exits 3)."""


class FlowFormatError(InputError):
    """A flow file's content as a whole does not fit its (given or detected) format."""


class SchemaError(InputError):
    """A table does not fit the canonical flow schema."""


class ConfigError(InputError):
    """An option or a configuration file has an invalid value."""


class SynthesisError(RecommenderError):
    """Policies could not be derived from the flows."""


class StorageError(RecommenderError):
    """Object storage (or a local folder) could not be listed, read or written
    (``recommend job`` exits 4)."""


class GitOpsError(RecommenderError):
    """The policy tree could not be committed to or pushed to its git repository
    (``recommend job`` exits 5)."""


class UnsupportedDialectError(RecommenderError, ValueError):
    """A policy dialect was asked for that is not implemented."""
