"""Typed app settings, built once from an injectable mapping (normally `os.environ`).

Every problem is collected and reported at once, by setting name, in one `SettingsError`.
Secret values (the result key, secret variables, connection strings) are kept out of `repr`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loadme.errors import SettingsError, VariableError
from loadme.variables import VariableFactory

T = TypeVar("T")

EXECUTORS = ("local", "aci")
DEPLOY_MODES = ("templatespec", "direct")
REGISTRY_AUTH_MODES = ("identity", "admin")
RESULT_AUTH_MODES = ("sas", "identity")
PREFIX_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MIN_RESULT_KEY_LENGTH = 32
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600

# Settings the code itself reads (the infra contract test checks the templates set them).
STORAGE_SETTING = "AzureWebJobsStorage"
STORAGE_ACCOUNT_SETTING = "AzureWebJobsStorage__accountName"
SCHEDULE_SETTING = "SCHEDULED_INIT_SCHEDULE"
JANITOR_SCHEDULE_SETTING = "JANITOR_SCHEDULE"


@dataclass(frozen=True)
class AciSettings:
    """Where and how containers are deployed on Azure Container Instances."""

    subscription_id: str
    resource_group: str
    location: str
    deploy_mode: str
    template_spec_version_id: str
    identity_id: str
    registry_server: str
    registry_auth: str
    registry_resource_id: str
    identity_client_id: str
    cpu: float
    memory_gb: float


@dataclass(frozen=True)
class Settings:
    """Everything the functions need from app settings, validated."""

    executor: str
    variable_prefix: str
    default_image: str
    default_command: tuple[str, ...]
    default_variables: dict[str, str]
    run_timeout_seconds: int
    journal_table: str
    logs_container: str
    result_auth: str
    storage_connection_string: str | None = field(repr=False)
    storage_account_name: str | None
    result_key: bytes = field(repr=False)
    secret_variables: dict[str, str] = field(repr=False)
    scheduled_variables: dict[str, str]
    schedule: str | None
    janitor_schedule: str
    result_grace_seconds: int
    local_executor_dir: str
    aci: AciSettings | None

    @property
    def secret_values(self) -> list[str]:
        """Every secret value this app knows, for redaction."""
        return [v for v in self.secret_variables.values() if v]

    @classmethod
    def from_mapping(cls, env: Mapping[str, str]) -> Settings:
        """Build and validate settings from `env`.

        Raises SettingsError naming every missing or invalid setting.
        """
        reader = _Reader(env)
        prefix = reader.text("VARIABLE_PREFIX", "___", check=_check_prefix)
        executor = reader.choice("EXECUTOR", EXECUTORS, None)
        conn = env.get(STORAGE_SETTING, "").strip() or None
        account = env.get(STORAGE_ACCOUNT_SETTING, "").strip() or None
        if conn is None and account is None:
            reader.problems.append(
                f"{STORAGE_SETTING}: missing (a connection string, or {STORAGE_ACCOUNT_SETTING} "
                "for an identity-based connection)"
            )
        result_auth = reader.choice("RESULT_AUTH", RESULT_AUTH_MODES, "sas")
        if result_auth == "sas" and conn is None and account is not None:
            reader.problems.append(
                "RESULT_AUTH: 'sas' needs an account key; with an identity-based "
                f"{STORAGE_SETTING} use RESULT_AUTH=identity"
            )
        key = reader.text("RESULT_KEY", None, check=_check_result_key)
        secret_map = reader.json_object("SECRET_VARIABLES", {})
        secrets: dict[str, str] = {}
        for var_name, setting_name in secret_map.items():
            if not var_name.startswith(prefix) or not PREFIX_PATTERN.match(var_name[len(prefix):] or "-"):
                reader.problems.append(f"SECRET_VARIABLES: {var_name!r} is not a valid variable name")
            elif setting_name not in env or not env[setting_name]:
                reader.problems.append(
                    f"SECRET_VARIABLES: {var_name} refers to setting {setting_name!r}, which is missing"
                )
            else:
                secrets[var_name] = env[setting_name]
        settings = cls(
            executor=executor,
            variable_prefix=prefix,
            default_image=reader.text("DEFAULT_IMAGE", None),
            default_command=tuple(reader.json_list("DEFAULT_COMMAND", ["python", "jobs/demo_job.py"])),
            default_variables=reader.json_object("DEFAULT_VARIABLES", {}),
            run_timeout_seconds=reader.integer("RUN_TIMEOUT_SECONDS", 3600, 1, MAX_TIMEOUT_SECONDS),
            journal_table=reader.text("JOURNAL_TABLE", "loadmeruns", check=_check_table),
            logs_container=reader.text("LOGS_CONTAINER", "loadme-logs", check=_check_blob_container),
            result_auth=result_auth,
            storage_connection_string=conn,
            storage_account_name=account,
            result_key=key.encode(),
            secret_variables=secrets,
            scheduled_variables=reader.json_object("SCHEDULED_INIT_VARIABLES", {}),
            schedule=env.get(SCHEDULE_SETTING, "").strip() or None,
            janitor_schedule=env.get(JANITOR_SCHEDULE_SETTING, "").strip() or "0 */5 * * * *",
            result_grace_seconds=reader.integer("RESULT_GRACE_SECONDS", 120, 1, 3600),
            local_executor_dir=reader.text("LOCAL_EXECUTOR_DIR", ".loadme/containers"),
            aci=_aci_settings(reader, result_auth) if executor == "aci" else None,
        )
        for setting, values in (("DEFAULT_VARIABLES", settings.default_variables),
                                ("SCHEDULED_INIT_VARIABLES", settings.scheduled_variables)):
            factory = VariableFactory(prefix, secrets)
            try:
                factory.validate_requested(values)
            except VariableError as exc:
                reader.problems.append(f"{setting}: {exc.message}")
        if reader.problems:
            raise SettingsError(reader.problems)
        return settings


def _aci_settings(reader: _Reader, result_auth: str) -> AciSettings:
    mode = reader.choice("DEPLOY_MODE", DEPLOY_MODES, "templatespec")
    registry_auth = reader.choice("REGISTRY_AUTH", REGISTRY_AUTH_MODES, "identity")
    return AciSettings(
        subscription_id=reader.text("AZURE_SUBSCRIPTION_ID", None),
        resource_group=reader.text("DEPLOYMENT_RESOURCE_GROUP", None),
        location=reader.text("ACI_LOCATION", None),
        deploy_mode=mode,
        template_spec_version_id=(
            reader.text("TEMPLATE_SPEC_VERSION_ID", None) if mode == "templatespec" else ""
        ),
        identity_id=reader.text("CONTAINER_IDENTITY_ID", None),
        registry_server=reader.text("REGISTRY_SERVER", None),
        registry_auth=registry_auth,
        registry_resource_id=(
            reader.text("REGISTRY_RESOURCE_ID", None) if registry_auth == "admin" else ""
        ),
        identity_client_id=(
            reader.text("CONTAINER_IDENTITY_CLIENT_ID", None) if result_auth == "identity" else ""
        ),
        cpu=reader.number("CONTAINER_CPU", 1.0, 0.1, 4.0),
        memory_gb=reader.number("CONTAINER_MEMORY_GB", 1.5, 0.1, 16.0),
    )


class _Reader:
    """Reads typed values from a mapping, collecting problems instead of stopping at the first."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def _raw(self, name: str, default: T | None) -> str | T | None:
        value = self.env.get(name, "")
        if value is None or str(value).strip() == "":
            if default is None:
                self.problems.append(f"{name}: missing")
            return default
        return str(value).strip()

    def text(self, name: str, default: str | None, check: Callable[[str], str | None] | None = None) -> str:
        value = self._raw(name, default)
        if value is None:
            return ""
        assert isinstance(value, str)
        if check is not None:
            problem = check(value)
            if problem:
                self.problems.append(f"{name}: {problem}")
        return value

    def choice(self, name: str, choices: tuple[str, ...], default: str | None) -> str:
        value = self.text(name, default)
        if value and value not in choices:
            self.problems.append(f"{name}: {value!r} is not one of {', '.join(choices)}")
        return value

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        return int(self._bounded(name, default, low, high, int, "an integer"))

    def number(self, name: str, default: float, low: float, high: float) -> float:
        return float(self._bounded(name, default, low, high, float, "a number"))

    def _bounded(self, name: str, default: float, low: float, high: float,
                 cast: Callable[[Any], float], kind: str) -> float:
        value = self._raw(name, default)
        try:
            number = cast(value)
        except (TypeError, ValueError):
            self.problems.append(f"{name}: {value!r} is not {kind}")
            return default
        if not low <= number <= high:
            self.problems.append(f"{name}: {number} is outside {low}..{high}")
        return number

    def _json(self, name: str, default: Any) -> Any:
        raw = self.env.get(name, "")
        if not raw or not raw.strip():
            return default
        try:
            return json.loads(raw)
        except json.JSONDecodeError as exc:
            self.problems.append(f"{name}: not valid JSON ({exc.msg})")
            return default

    def json_object(self, name: str, default: dict[str, str]) -> dict[str, str]:
        value = self._json(name, default)
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            self.problems.append(f"{name}: must be a JSON object of strings")
            return dict(default)
        return value

    def json_list(self, name: str, default: list[str]) -> list[str]:
        value = self._json(name, default)
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            self.problems.append(f"{name}: must be a non-empty JSON array of strings")
            return list(default)
        return value


def _check_prefix(value: str) -> str | None:
    return None if PREFIX_PATTERN.match(value) else "must match [A-Za-z_][A-Za-z0-9_]*"


def _check_result_key(value: str) -> str | None:
    if len(value) < MIN_RESULT_KEY_LENGTH:
        return f"must be at least {MIN_RESULT_KEY_LENGTH} characters"
    return None


def _check_table(value: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z][A-Za-z0-9]{2,62}", value) else "not a valid table name"


def _check_blob_container(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}", value):
        return None
    return "not a valid blob container name"
