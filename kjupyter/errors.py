"""The one exception hierarchy of kjupyter.

Every error kjupyter raises on purpose derives from :class:`KjupyterError`.
Errors of the kubernetes client, fsspec and pickle are wrapped at the
boundary where they happen, so users never have to catch library internals.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any


class KjupyterError(Exception):
    """Root of every error kjupyter raises on purpose."""


class SpecError(KjupyterError, ValueError):
    """A run option (cpu, memory, gpu, timeout, ...) has a bad value."""

    def __init__(self, field: str, value: object, example: str, why: str = "") -> None:
        self.field = field
        self.value = value
        self.example = example
        detail = f": {why}" if why else ""
        super().__init__(f"invalid {field}={value!r}{detail}; for example {field}={example}")

    def __reduce__(self) -> tuple[object, ...]:  # keep it picklable across the wire
        return (_rebuild, (type(self), str(self), self.__dict__))


class UnknownOptionError(SpecError):
    """An option name that kjupyter does not know (a typo, usually)."""

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        KjupyterError.__init__(self, f"unknown option {name!r}; the options are: {', '.join(known)}")
        self.field, self.value, self.example = name, None, ""


class ConfigError(KjupyterError):
    """The cluster configuration is missing, malformed or names an unknown profile."""


class SerializationError(KjupyterError):
    """A function, argument or result cannot be pickled or unpickled."""


class VersionMismatchError(SerializationError):
    """The client and the runner use different Python or cloudpickle versions."""


class StoreError(KjupyterError):
    """The run store cannot be reached, read or written."""


class IntegrityError(SerializationError):
    """A payload, result or inline frame is not authenticated as written by your own client or runs.

    Someone (or something) with write access to the run store changed it, or it was never written by
    kjupyter. It is never unpickled.
    """


class BackendError(KjupyterError):
    """The backend (local processes or a Kubernetes cluster) refused or failed."""


class ApiError(BackendError):
    """The Kubernetes API server answered a request with an error status (``status``, ``reason``)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class RequestTimedOut(BackendError):
    """A request to the Kubernetes API server got no answer in time: it may or may not have been applied."""


class FileError(KjupyterError):
    """The step failed on one file; ``path`` is its URL, ``error`` the original exception (if it travelled)."""

    def __init__(self, path: str, message: str, error: BaseException | None = None, remote_traceback: str = "") -> None:
        self.path = path
        self.message = message
        self.error = error
        self.remote_traceback = remote_traceback
        super().__init__(f"{path}: {message}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (FileError, (self.path, self.message, self.error, self.remote_traceback))


class RunFailed(KjupyterError):
    """A run ended in failure without a Python exception to re-raise.

    Raised for infrastructure failures: the pod was killed (out of memory,
    deadline, eviction), could not start, or exited without a result.
    """

    def __init__(self, message: str, *, run_id: str = "", reason: str = "", logs: str = "", sentence: str = "",
                 hint: str = "") -> None:  # fmt: skip
        self.run_id = run_id
        self.reason = reason
        self.logs = logs  # the last log lines of the failed task (the views show the log; the message does not)
        self.sentence = sentence  # what happened, one sentence (the diagnosis when there is one)
        self.hint = hint  # what to do about it ("" when nothing helps)
        super().__init__(message)

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), self.__dict__))


class RunTimeout(RunFailed):
    """The run exceeded its ``timeout``."""


class RunCancelled(KjupyterError, concurrent.futures.CancelledError):
    """The run was cancelled (by the user, Ctrl-C, a kernel interrupt, the widget, the lab or the CLI).

    Every cancelled run raises this one type; it is also a ``concurrent.futures.CancelledError``.
    """

    def __init__(self, message: str = "the run was cancelled", *, run_id: str = "") -> None:
        super().__init__(message)
        self.run_id = run_id

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild, (type(self), str(self), self.__dict__))


class RemoteError(KjupyterError):
    """A remote exception whose original type cannot be rebuilt locally.

    ``remote_type`` is the qualified name of the original exception class and
    ``remote_traceback`` the traceback text as printed in the pod.
    """

    def __init__(self, remote_type: str, message: str, remote_traceback: str) -> None:
        self.remote_type = remote_type
        self.remote_message = message
        self.remote_traceback = remote_traceback
        super().__init__(f"{remote_type}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.remote_type, self.remote_message, self.remote_traceback))

    def __str__(self) -> str:
        return f"{self.remote_type}: {self.remote_message}\n\nRemote traceback:\n{self.remote_traceback.rstrip()}"


class RemoteTraceback(KjupyterError):
    """Carries the remote traceback text as the ``__cause__`` of a re-raised exception."""

    def __init__(self, text: str) -> None:
        self.text = text
        super().__init__(text)

    def __str__(self) -> str:
        return "\n\nRemote traceback:\n" + self.text.rstrip()


def _rebuild(cls: type[BaseException], message: str, state: dict[str, object]) -> BaseException:
    """Unpickle an error whose ``__init__`` takes more than a message."""
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.__dict__.update(state)
    return exc


class KjupyterWarning(UserWarning):
    """Warnings kjupyter emits (tests turn them into errors)."""
