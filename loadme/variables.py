"""The variable factory: build, validate, merge and filter a run's prefixed variables.

A run's state is a flat mapping of names `^<prefix>[A-Za-z_][A-Za-z0-9_]*$` to strings. The
orchestrator owns the reserved names; the requester and the job own the rest. The total size is
bounded so every queue message carrying the state stays under the 64 KiB queue limit.

This module is stdlib-only: the container image ships it so the runner speaks the same contract.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from loadme.contract import RESERVED_SUFFIXES
from loadme.errors import SecretInOutput, VariableError

DEFAULT_PREFIX = "___"
# Measured as compact ASCII JSON. 30,000 leaves room in a 48 KiB queue payload for the envelope
# and a 4 KiB log tail, and fits one Table storage string property (32 Ki UTF-16 chars).
MAX_VARIABLES_BYTES = 30_000
MAX_NAME_LENGTH = 128


# Environment names a job's variables must never be able to take: the runner's own (LOADME_*, the
# contract), what the dynamic loader, shells and language runtimes read at start (code execution or
# a changed trust store), proxies, and what Azure's managed identity and SDKs read. Families are
# name prefixes: every name starting with one is refused.
UNSAFE_NAMES = (
    "PATH", "HOME", "SHELL", "IFS", "ENV", "BASH_ENV", "CDPATH", "PS4", "PROMPT_COMMAND", "TMPDIR", "TZ",
    "HOSTALIASES", "LOCALDOMAIN", "RES_OPTIONS", "GCONV_PATH", "CLASSPATH", "PERL5LIB", "PERL5OPT", "PERLLIB",
    "RUBYOPT", "RUBYLIB", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "no_proxy", "all_proxy",
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "MSI_ENDPOINT", "MSI_SECRET",
)
UNSAFE_FAMILIES = ("LOADME_", "LD_", "DYLD_", "PYTHON", "BASH_FUNC_", "NODE_", "JAVA_", "_JAVA_", "GLIBC_",
                   "MALLOC_", "AZURE_", "LC_", "LANG")


def unsafe_prefix(prefix: str) -> str:
    """A dangerous environment name (or family, ending in `*`) that `prefix` lets a variable take;
    "" when there is none."""
    factory = VariableFactory(prefix)
    for name in UNSAFE_NAMES:
        if factory.is_name(name):
            return name
    for family in UNSAFE_FAMILIES:
        if prefix.startswith(family) or factory.is_name(family + "X") or factory.is_name(family):
            return family + "*"
    return ""


def variables_size(variables: Mapping[str, str]) -> int:
    """Bytes the variables take in a message (compact ASCII JSON)."""
    return len(json.dumps(variables, ensure_ascii=True, separators=(",", ":")))


class VariableFactory:
    """Validates and combines variables for one prefix and a set of secret names."""

    def __init__(self, prefix: str = DEFAULT_PREFIX, secret_names: Iterable[str] = ()) -> None:
        self.prefix = prefix
        self._pattern = re.compile("^" + re.escape(prefix) + r"[A-Za-z_][A-Za-z0-9_]*$")
        self.reserved = frozenset(prefix + s for s in RESERVED_SUFFIXES)
        self.secret_names = frozenset(secret_names)

    def name(self, suffix: str) -> str:
        """The full variable name for `suffix` (e.g. `RunId` -> `___RunId`)."""
        return self.prefix + suffix

    def is_name(self, name: str) -> bool:
        """True when `name` is a well-formed variable name for this prefix."""
        return len(name) <= MAX_NAME_LENGTH and bool(self._pattern.match(name))

    def check_name(self, name: object) -> str:
        """Return `name` if valid. Raises VariableError naming the problem."""
        if not isinstance(name, str) or not self.is_name(name):
            raise VariableError(
                f"invalid variable name {name!r}: must match {self.prefix}[A-Za-z_][A-Za-z0-9_]* "
                f"(at most {MAX_NAME_LENGTH} characters)"
            )
        return name

    def check_size(self, variables: Mapping[str, str]) -> None:
        """Raises VariableError (413) when the variables exceed the message budget."""
        size = variables_size(variables)
        if size > MAX_VARIABLES_BYTES:
            raise VariableError(
                f"variables take {size} bytes, more than the {MAX_VARIABLES_BYTES} a run may carry",
                status=413,
            )

    def validate_requested(self, variables: object) -> dict[str, str]:
        """Validate variables a requester supplies. Raises VariableError naming the first problem."""
        if not isinstance(variables, dict):
            raise VariableError("'variables' must be a JSON object of name -> string")
        result: dict[str, str] = {}
        for name, value in variables.items():
            self.check_name(name)
            if name in self.reserved:
                raise VariableError(f"variable {name} is reserved: the orchestrator sets it")
            if name in self.secret_names:
                raise VariableError(f"variable {name} is a secret: it comes from app settings only")
            if not isinstance(value, str):
                raise VariableError(f"variable {name} must be a string, got {type(value).__name__}")
            _check_value(f"variable {name}", value)
            result[name] = value
        self.check_size(result)
        return result

    def from_environ(self, environ: Mapping[str, str]) -> dict[str, str]:
        """The prefixed variables in an environment mapping (secret ones left out)."""
        return {
            k: v for k, v in environ.items() if self.is_name(k) and k not in self.secret_names
        }

    def merge_job_output(
        self, state: Mapping[str, str], reported: Mapping[str, str], secrets: Iterable[str] = ()
    ) -> tuple[dict[str, str], list[str]]:
        """Merge a job's reported variables over the run's state.

        Reserved and secret names keep the state's value; malformed names are dropped. Returns the
        merged variables and the names that were ignored.

        `secrets` are the values of the secrets the step was given. An output whose value contains
        one of them (redact()'s rule: every non-empty secret, anywhere in the value) fails the step:
        raises SecretInOutput naming those variables, never their values, and nothing of the
        output is taken. Failing, not dropping, is what a pipeline's author needs: the later steps
        expect that output, and carrying on without it (or with its old value) would hide the
        problem behind a wrong result. Only the step's own secrets are compared, so a refusal tells
        a job nothing about secrets it was not given. Value matching cannot catch an encoded copy
        (base64, reversed, split over two variables): that is why secrets are bound to images
        (SECRET_VARIABLES), and why an image that may get a secret must be trusted with it.

        Raises VariableError for a value with a NUL character (no container environment can carry
        one) or when the merged variables are too large.
        """
        taken: dict[str, str] = {}
        ignored: list[str] = []
        refused: list[str] = []
        values = _secret_texts(secrets)
        for name, value in reported.items():
            if (
                not isinstance(name, str)
                or not isinstance(value, str)
                or not self.is_name(name)
                or name in self.secret_names
                or (name in self.reserved and state.get(name) != value)
            ):
                ignored.append(str(name))
                continue
            if any(secret in value for secret in values):
                refused.append(name)
                continue
            taken[name] = value
        if refused:
            raise SecretInOutput(refused)
        for name, value in taken.items():
            _check_value(f"output variable {name}", value)
        merged = {**state, **taken}
        self.check_size(merged)
        return merged, ignored


def _check_value(what: str, value: str) -> None:
    """Raises VariableError when `value` has a NUL character: no process environment can carry one."""
    if "\x00" in value:
        raise VariableError(f"{what} has a NUL character (\\x00) in its value, which no container "
                            "environment can carry")


def _secret_texts(secrets: Iterable[str]) -> list[str]:
    """The secret values to look for in text, longest first; empty values are never secrets.

    One rule for redaction and for refusing outputs. A very short secret matches by chance: its
    logs are full of `***` and its outputs are refused, loudly; operators keep secrets long.
    """
    return sorted((s for s in secrets if s), key=len, reverse=True)


REDACTED = "***"


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value replaced by `***` (longest first, so overlaps go too)."""
    for secret in _secret_texts(secrets):
        text = text.replace(secret, REDACTED)
    return text
