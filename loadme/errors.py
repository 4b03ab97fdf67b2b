"""Exceptions a caller acts on differently. Everything else propagates as is."""

from __future__ import annotations


class LoadmeError(Exception):
    """Base class of the errors this library raises on purpose."""


class SettingsError(LoadmeError):
    """One or more app settings are missing or invalid; `problems` names each one."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid app settings: " + "; ".join(problems))


class RequestError(LoadmeError):
    """A caller's input is invalid: answered with `status` (4xx) and a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(message)


class VariableError(RequestError):
    """A variable name, value or the total size breaks the variable contract."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(status, message)


class EnvelopeError(LoadmeError):
    """A queue message is malformed or has an unknown schema version (it belongs in the poison queue)."""


class UntrustedMessage(EnvelopeError):
    """A well-formed `initjob` message the journal does not back (an unknown run, another plan or other
    variables than the app journaled): nothing is deployed and no run is touched; it ends in poison."""


class TransientError(LoadmeError):
    """A dependency failed in a way worth retrying (throttling, 5xx, timeout): raise so the host retries."""


class DeployRejected(LoadmeError):
    """The platform refused a deployment for good (invalid template, bad image...): record a failed run."""


class QuotaExceeded(TransientError):
    """The subscription is out of container-group quota: retry later, with a delay."""


class SecretInOutput(VariableError):
    """A job reported output variables whose values contain a secret it was given; `names` are theirs."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        super().__init__(
            f"output variable(s) {', '.join(names)} refused: the value contains a secret the step was given "
            "(secrets never leave a step through variables); the step's output was not taken")
