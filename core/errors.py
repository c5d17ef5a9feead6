"""Errors a user can act on. Each message says what went wrong and what to do."""

from __future__ import annotations


class LabError(Exception):
    """Base class for every error whose message is meant for the user."""


class DataError(LabError):
    """A data folder, image or label cannot be used as given."""


class ImageError(DataError):
    """An image file is missing, unreadable or of an unexpected size."""


class LabelError(DataError):
    """A label JSON file is not valid JSON or lacks the keys xBD labels have."""


class MetricError(LabError):
    """A metric cannot be computed from the inputs given (shape, range, dtype)."""


class LpipsUnavailable(MetricError):
    """LPIPS cannot be built, usually because its AlexNet weights are not on disk."""


class RunError(LabError):
    """A run folder is missing or its record cannot be read."""


class ModelNotAvailable(LabError):
    """A model's weights are neither in a given folder nor in the local cache, and the
    hub cannot be reached (or downloading was not asked for)."""


class ModelLoadError(LabError):
    """A model could not be loaded; the previously loaded model is still in place."""


class OutOfMemory(LabError):
    """The GPU ran out of memory; memory was freed and the message says what to change."""


class GenerationCancelled(LabError):
    """The user stopped a generation; nothing was saved for the unfinished images."""


class RequestError(LabError):
    """A generation request asks for something its backbone cannot do."""
