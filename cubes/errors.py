"""The few exception classes starcenter raises; each message names the file and the problem."""

from __future__ import annotations


class StarcenterError(Exception):
    """Base class: a one-line, user-facing error."""


class BadArgumentError(StarcenterError, ValueError):
    """An argument (chip, filter, count, preset...) is invalid."""


class StoreMismatchError(StarcenterError):
    """A store exists but was written with other parameters, or lacks a required group."""

    def __init__(self, store: str, problem: str):
        super().__init__(f"{store}: {problem}")
        self.store = store


class BadInputError(StarcenterError):
    """An input file is unreadable or not what starcenter expects."""

    def __init__(self, path: str, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path


class StoreIOError(StarcenterError):
    """Reading or writing a store failed (disk full, read-only, a truncated chunk); the chunks
    finished before are kept and a rerun resumes."""
