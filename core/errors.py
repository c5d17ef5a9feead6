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


class SaveError(LabError):
    """A file could not be written (a full disk, a read-only folder, any other OS error);
    what was saved before is intact."""

    @classmethod
    def from_os(cls, err: OSError, what: str, folder, option: str) -> "SaveError":
        """'Could not save `what` in `folder`: <the OS's reason>. <what to do>', where the
        advice names `option`, the flag choosing that folder (e.g. "--runs")."""
        import errno

        reason = err.strerror or str(err) or type(err).__name__
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            advice = f"Free some space or choose another {option} folder."
        elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            advice = f"Make the folder writable or choose another {option} folder."
        else:
            advice = f"Check the folder or choose another {option} folder."
        return cls(f"Could not save {what} in {folder}: {reason}. {advice}")


class LaunchError(LabError):
    """The app cannot start as asked: a malformed --auth, a port already in use."""

    @classmethod
    def cannot_listen(cls, host: str, port: int, err: OSError) -> "LaunchError":
        """Why the app cannot listen on `host`:`port`, and what to do."""
        import errno

        if err.errno == errno.EADDRINUSE or "empty port" in str(err):  # gradio: "Cannot find empty port"
            return cls(f"Port {port} on {host} is already in use (another program, or this app "
                       "started twice). Stop it, or choose another port with --port.")
        reason = err.strerror or str(err) or type(err).__name__
        return cls(f"Cannot listen on {host}:{port}: {reason}. Use an address of this machine with "
                   "--host (127.0.0.1 for this machine only, 0.0.0.0 for every network).")
