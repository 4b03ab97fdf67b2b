"""Typed app settings from one table: name, default, parser, when it is needed, and what it means.

`SETTINGS` is the only definition: `Settings.from_mapping` builds and validates the typed object
from it (every missing or invalid setting reported at once, by name), `function_app.py` takes its
trigger parameters from it (`binding_schedule`, `is_set`), and the README's settings table is
rendered from it (`python -m loadme.settings`; a test keeps the README in step). This module is
the only one that reads the process environment (`from_environment`). Secret values (the result
key, secret variables, connection strings) are kept out of `repr`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loadme.errors import SettingsError, VariableError
from loadme.variables import DEFAULT_PREFIX, VariableFactory, unsafe_prefix

if TYPE_CHECKING:  # imported where settings are built: `function_app.py` imports this module to index
    from loadme.admission import Limits
    from loadme.images import ImagePolicy
    from loadme.secret_binding import SecretVariables

PREFIX_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MIN_RESULT_KEY_LENGTH = 32
MAX_TIMEOUT_SECONDS = 7 * 24 * 3600
STORAGE_SETTING = "AzureWebJobsStorage"
STORAGE_ACCOUNT_SETTING = "AzureWebJobsStorage__accountName"


# ---- parsers: text -> value, or ValueError naming the problem ------------------------------------
def _text(value: str) -> str:
    return value


def _choice(*options: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if value not in options:
            raise ValueError(f"{value!r} is not one of {', '.join(options)}")
        return value
    parse.__doc__ = " or ".join(f"`{o}`" for o in options)
    return parse


def _bounded(cast: Callable[[str], float], kind: str, low: float, high: float) -> Callable[[str], Any]:
    def parse(value: str) -> Any:
        try:
            number = cast(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not {kind}") from exc
        if not low <= number <= high:
            raise ValueError(f"{number} is outside {low}..{high}")
        return number
    return parse


def _matching(pattern: str, problem: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        if not re.fullmatch(pattern, value):
            raise ValueError(problem)
        return value
    return parse


def _prefix(value: str) -> str:
    if not PREFIX_PATTERN.fullmatch(value):
        raise ValueError("must match [A-Za-z_][A-Za-z0-9_]*")
    if name := unsafe_prefix(value):
        raise ValueError(f"{value!r} lets a variable be named {name}, which the runner or the container's "
                         "environment uses (the job's output would set it in later steps); choose a prefix no "
                         f"such name starts with, like the default {DEFAULT_PREFIX}")
    return value


def _json(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg})") from exc


def _json_object(value: str) -> dict[str, str]:
    data = _json(value)
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError("must be a JSON object of strings")
    return data


def _json_secret_map(value: str) -> dict[str, Any]:
    data = _json(value)
    if not isinstance(data, dict):
        raise ValueError("must be a JSON object of secret variable -> setting name or {\"setting\", \"images\"}")
    return data


def _json_list(value: str) -> tuple[str, ...]:
    data = _json(value)
    if not isinstance(data, list) or not data or not all(isinstance(v, str) and v for v in data):
        raise ValueError("must be a non-empty JSON array of strings")
    return tuple(data)


def _json_names(value: str) -> tuple[str, ...]:
    data = _json(value)
    if not isinstance(data, list) or not all(isinstance(v, str) and v for v in data):
        raise ValueError("must be a JSON array of strings")
    return tuple(data)


# In Azure a secret setting is a Key Vault reference the platform resolves; when it cannot (no access,
# no such secret) the app sees the reference text itself, which must never pass for the value.
KEY_VAULT_REFERENCE = "@Microsoft.KeyVault("
UNRESOLVED = ("is an unresolved Key Vault reference (check the app's access to the vault and the secret's "
              "name; the portal shows each reference's status)")


def _resolved(value: str) -> str:
    if value.startswith(KEY_VAULT_REFERENCE):
        raise ValueError(UNRESOLVED)
    return value


def _result_key(value: str) -> bytes:
    _resolved(value)
    if len(value) < MIN_RESULT_KEY_LENGTH:
        raise ValueError(f"must be at least {MIN_RESULT_KEY_LENGTH} characters")
    return value.encode()


def _int(low: int, high: int) -> Callable[[str], Any]:
    return _bounded(int, "an integer", low, high)


def _float(low: float, high: float) -> Callable[[str], Any]:
    return _bounded(float, "a number", low, high)


# ---- the table ---------------------------------------------------------------------------------
ALWAYS, OPTIONAL = "yes", ""


@dataclass(frozen=True)
class Setting:
    """One app setting. `default` None makes it required when `needed_when` holds (always by
    default); `needed` is what the README says about that."""

    name: str
    attribute: str
    doc: str
    default: str | None = None
    parse: Callable[[str], Any] = _text
    needed: str = ALWAYS
    needed_when: Callable[[Mapping[str, str]], bool] = field(default=lambda env: True)
    secret: bool = False

    def raw(self, env: Mapping[str, str]) -> str | None:
        """The value as set (stripped), or the default."""
        value = str(env.get(self.name) or "").strip()
        return value or self.default


def _aci(env: Mapping[str, str]) -> bool:
    return str(env.get("EXECUTOR", "")).strip() == "aci"


def _aci_templatespec(env: Mapping[str, str]) -> bool:
    return _aci(env) and (str(env.get("DEPLOY_MODE") or "").strip() or "templatespec") == "templatespec"


def _aci_admin(env: Mapping[str, str]) -> bool:
    return _aci(env) and str(env.get("REGISTRY_AUTH") or "").strip() == "admin"


def _aci_identity_results(env: Mapping[str, str]) -> bool:
    return _aci(env) and str(env.get("RESULT_AUTH") or "").strip() == "identity"


WITH_ACI = "with `EXECUTOR=aci`"
SETTINGS: tuple[Setting, ...] = (
    Setting("EXECUTOR", "executor", "`local` (processes on this machine) or `aci`", parse=_choice("local", "aci")),
    Setting(STORAGE_SETTING, "storage_connection_string",
            f"storage connection string (queues, journal, logs); or `{STORAGE_ACCOUNT_SETTING}` for an "
            "identity-based connection (then `RESULT_AUTH=identity`)", needed="yes*", secret=True,
            needed_when=lambda env: not str(env.get(STORAGE_ACCOUNT_SETTING) or "").strip()),
    Setting(STORAGE_ACCOUNT_SETTING, "storage_account_name",
            "storage account name for an identity-based connection (Azure)", needed=OPTIONAL,
            needed_when=lambda env: False),
    Setting("RESULT_KEY", "result_key", "HMAC key of result tokens, at least 32 characters (a Key Vault "
            "reference in Azure)", parse=_result_key, secret=True),
    Setting("DEFAULT_IMAGE", "default_image", "image when a request names none"),
    Setting("DEFAULT_COMMAND", "default_command", "job command when a request names none (JSON array)",
            default='["python", "jobs/demo_job.py"]', parse=_json_list, needed=OPTIONAL),
    Setting("DEFAULT_VARIABLES", "default_variables", "variables every run starts with (JSON object); the "
            "request's win", default="{}", parse=_json_object, needed=OPTIONAL),
    Setting("VARIABLE_PREFIX", "variable_prefix", "the variable name prefix; refused when it lets a variable "
            "be named like what the runner or the container's environment reads (`PATH`, `LD_*`, `PYTHON*`, "
            "`LOADME_*`, ...)", default=DEFAULT_PREFIX,
            parse=_prefix, needed=OPTIONAL),
    Setting("RUN_TIMEOUT_SECONDS", "run_timeout_seconds", "default deadline of a run", default="3600",
            parse=_int(1, MAX_TIMEOUT_SECONDS), needed=OPTIONAL),
    Setting("SECRET_VARIABLES", "secret_variables", "JSON object: secret variable -> name of the app setting "
            "holding its value (any allowed image may get it), or -> `{\"setting\": NAME, \"images\": [...]}` "
            "(only those images may get it: entries as in `ALLOWED_IMAGES`; a request naming it for another "
            "image gets a `403`)", default="{}", parse=_json_secret_map, needed=OPTIONAL, secret=True),
    Setting("RESULT_AUTH", "result_auth", "how the container posts its result: `sas` (a SAS that allows only "
            "that; needs the account key) or `identity` (its log goes with a SAS for its one blob either way)",
            default="sas", parse=_choice("sas", "identity"),
            needed=OPTIONAL),
    Setting("JOURNAL_TABLE", "journal_table", "the journal table (runs, events and their index)",
            default="loadmeruns", parse=_matching(r"[A-Za-z][A-Za-z0-9]{2,62}", "not a valid table name"),
            needed=OPTIONAL),
    Setting("LOGS_CONTAINER", "logs_container", "blob container of the archived container logs",
            default="loadme-logs", parse=_matching(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}",
                                                   "not a valid blob container name"), needed=OPTIONAL),
    Setting("ADMISSION_TABLE", "admission_table", "the table admission control keeps capacity and the waiting "
            "line in", default="loadmeadmission",
            parse=_matching(r"[A-Za-z][A-Za-z0-9]{2,62}", "not a valid table name"), needed=OPTIONAL),
    Setting("CAPACITY_GROUPS", "capacity_groups", "container groups in use at most (ACI allows 100 per "
            "subscription and region)", default="95", parse=_int(1, 10_000), needed=OPTIONAL),
    Setting("CAPACITY_CORES", "capacity_cores", "cores in use at most (ACI allows 100 standard cores)",
            default="95", parse=_float(0.1, 100_000.0), needed=OPTIONAL),
    Setting("CAPACITY_CREATES_PER_5_MINUTES", "capacity_creates_5m", "container group creates per 5 minutes at "
            "most (ACI throttles at 100)", default="95", parse=_int(1, 100_000), needed=OPTIONAL),
    Setting("CAPACITY_CREATES_PER_HOUR", "capacity_creates_hour", "container group creates per hour at most (ACI "
            "throttles at 300)", default="290", parse=_int(1, 1_000_000), needed=OPTIONAL),
    Setting("RUN_RETENTION_DAYS", "run_retention_days", "days a run's journal rows and logs are kept",
            default="30", parse=_int(1, 3650), needed=OPTIONAL),
    Setting("SCHEDULED_INIT_SCHEDULE", "schedule", "NCRONTAB (six fields) of `scheduled_init`; the timer "
            "exists only when set", default="", needed=OPTIONAL),
    Setting("SCHEDULED_INIT_VARIABLES", "scheduled_variables", "the variables of timer-started runs",
            default="{}", parse=_json_object, needed=OPTIONAL),
    Setting("SCHEDULED_INIT_SECRETS", "scheduled_secrets", "the secret variables timer-started runs get (JSON "
            "array of names from `SECRET_VARIABLES`)", default="[]", parse=_json_names, needed=OPTIONAL),
    Setting("ALLOWED_IMAGES", "allowed_images", "images runs may use (JSON array): a registry or path prefix "
            "ending in `/` (`myacr.azurecr.io/`, `myacr.azurecr.io/jobs/`) or one repository "
            "(`myacr.azurecr.io/jobs/etl`); default: `REGISTRY_SERVER/` with `EXECUTOR=aci`, the repository of "
            "`DEFAULT_IMAGE` with `local`", parse=_json_names, needed=OPTIONAL, needed_when=lambda env: False),
    Setting("JANITOR_SCHEDULE", "janitor_schedule", "NCRONTAB of the janitor", default="0 */5 * * * *",
            needed=OPTIONAL),
    Setting("RESULT_GRACE_SECONDS", "result_grace_seconds", "how long after a container stops the janitor "
            "waits for its result", default="120", parse=_int(1, 3600), needed=OPTIONAL),
    Setting("LOCAL_EXECUTOR_DIR", "local_executor_dir", "where the local executor keeps its process records",
            default=".loadme/containers", needed=OPTIONAL),
    Setting("AZURE_SUBSCRIPTION_ID", "subscription_id", "subscription of the container groups", needed=WITH_ACI,
            needed_when=_aci),
    Setting("DEPLOYMENT_RESOURCE_GROUP", "resource_group", "resource group of the container groups",
            needed=WITH_ACI, needed_when=_aci),
    Setting("ACI_LOCATION", "location", "region of the container groups", needed=WITH_ACI, needed_when=_aci),
    Setting("CONTAINER_IDENTITY_ID", "identity_id", "resource id of the user-assigned identity the containers "
            "run as (image pull, result post)", needed=WITH_ACI, needed_when=_aci),
    Setting("REGISTRY_SERVER", "registry_server", "login server of the registry (e.g. `myacr.azurecr.io`)",
            needed=WITH_ACI, needed_when=_aci),
    Setting("DEPLOY_MODE", "deploy_mode", "`templatespec` (an ARM deployment of the template spec) or `direct`",
            default="templatespec", parse=_choice("templatespec", "direct"), needed=OPTIONAL),
    Setting("TEMPLATE_SPEC_VERSION_ID", "template_spec_version_id", "resource id of the template spec version",
            needed="with `DEPLOY_MODE=templatespec`", needed_when=_aci_templatespec),
    Setting("REGISTRY_AUTH", "registry_auth", "`identity` (AcrPull by the containers' identity) or `admin`",
            default="identity", parse=_choice("identity", "admin"), needed=OPTIONAL),
    Setting("REGISTRY_RESOURCE_ID", "registry_resource_id", "resource id of the registry (admin credentials)",
            needed="with `REGISTRY_AUTH=admin`", needed_when=_aci_admin),
    Setting("CONTAINER_IDENTITY_CLIENT_ID", "identity_client_id", "client id of the containers' identity",
            needed="with `RESULT_AUTH=identity`", needed_when=_aci_identity_results),
    Setting("CONTAINER_CPU", "cpu", "cores of each container", default="1.0", parse=_float(0.1, 4.0),
            needed=OPTIONAL),
    Setting("CONTAINER_MEMORY_GB", "memory_gb", "memory of each container", default="1.5",
            parse=_float(0.1, 16.0), needed=OPTIONAL),
)
BY_NAME = {s.name: s for s in SETTINGS}
_ACI_ATTRIBUTES = ("subscription_id", "resource_group", "location", "deploy_mode", "template_spec_version_id",
                   "identity_id", "registry_server", "registry_auth", "registry_resource_id", "identity_client_id",
                   "cpu", "memory_gb")


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
    run_retention_days: int
    admission_table: str
    capacity: Limits
    container_cpu: float
    allowed_images: ImagePolicy
    result_auth: str
    storage_connection_string: str | None = field(repr=False)
    storage_account_name: str | None
    result_key: bytes = field(repr=False)
    secret_variables: SecretVariables = field(repr=False)
    scheduled_variables: dict[str, str]
    scheduled_secrets: tuple[str, ...]
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
        """Build and validate settings from `env`. Raises SettingsError naming every problem."""
        from loadme.admission import Limits

        problems: list[str] = []
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = setting.raw(env)
            if raw is None:
                if setting.needed_when(env):
                    problems.append(f"{setting.name}: missing" + (
                        f" (a connection string, or {STORAGE_ACCOUNT_SETTING} for an identity-based connection)"
                        if setting.name == STORAGE_SETTING else ""))
                values[setting.attribute] = None
                continue
            try:
                values[setting.attribute] = setting.parse(raw)
            except ValueError as exc:
                problems.append(f"{setting.name}: {exc}")
                values[setting.attribute] = None
        prefix = values["variable_prefix"] or DEFAULT_PREFIX
        if values["result_auth"] == "sas" and not values["storage_connection_string"] \
                and values["storage_account_name"]:
            problems.append(f"RESULT_AUTH: 'sas' needs an account key; with an identity-based {STORAGE_SETTING} "
                            "use RESULT_AUTH=identity")
        values["allowed_images"] = _image_policy(values, problems)
        values["secret_variables"] = _secrets(values["secret_variables"] or {}, prefix, env,
                                              values["allowed_images"], problems)
        factory = VariableFactory(prefix, values["secret_variables"])
        for name, attribute in (("DEFAULT_VARIABLES", "default_variables"),
                                ("SCHEDULED_INIT_VARIABLES", "scheduled_variables")):
            try:
                factory.validate_requested(values[attribute] or {})
            except VariableError as exc:
                problems.append(f"{name}: {exc.message}")
        values["capacity"] = Limits(values.pop("capacity_groups") or 1, values.pop("capacity_cores") or 1.0,
                                    values.pop("capacity_creates_5m") or 1, values.pop("capacity_creates_hour") or 1)
        if values["cpu"] and values["capacity"].cores < values["cpu"]:
            problems.append(f"CAPACITY_CORES: {values['capacity'].cores:g} is less than one container's "
                            f"CONTAINER_CPU ({values['cpu']:g}): nothing could ever run")
        for name in values["scheduled_secrets"] or ():
            if name not in values["secret_variables"]:
                problems.append(f"SCHEDULED_INIT_SECRETS: {name} is not one of SECRET_VARIABLES")
            elif values["default_image"] and (refusal := values["secret_variables"].refusal(
                    name, values["default_image"])):
                problems.append(f"SCHEDULED_INIT_SECRETS: {refusal}; timer-started runs use DEFAULT_IMAGE")
        if problems:
            raise SettingsError(problems)
        values["container_cpu"] = float(values["cpu"])
        aci = _aci_settings(values)
        values["schedule"] = values["schedule"] or None
        return cls(**values, aci=aci if values["executor"] == "aci" else None)

    @classmethod
    def from_environment(cls) -> Settings:
        """Settings from the process environment (the app settings). Raises SettingsError."""
        return cls.from_mapping(os.environ)


def _image_policy(values: dict[str, Any], problems: list[str]) -> ImagePolicy:
    """ALLOWED_IMAGES, or its default for the executor; DEFAULT_IMAGE must be one of them."""
    from loadme.images import ImagePolicy, repository

    entries = values["allowed_images"]
    if entries is None:
        if values["executor"] == "aci":
            entries = (f"{values['registry_server']}/",) if values["registry_server"] else ()
        else:
            entries = (repository(values["default_image"]),) if values["default_image"] else ()
    policy = ImagePolicy.from_entries(entries)
    image = values["default_image"]
    if image and policy.entries and not policy.allows(image):  # no entries: a missing setting says why
        problems.append(f"DEFAULT_IMAGE: {image!r} is not allowed by ALLOWED_IMAGES ({policy.describe()})")
    return policy


def _aci_settings(values: dict[str, Any]) -> AciSettings:
    """Take the ACI attributes out of `values` (strings default to empty)."""
    text = {a: str(values.pop(a) or "") for a in _ACI_ATTRIBUTES if a not in ("cpu", "memory_gb")}
    return AciSettings(**text, cpu=float(values.pop("cpu")), memory_gb=float(values.pop("memory_gb")))


def _secrets(mapping: dict[str, Any], prefix: str, env: Mapping[str, str], allowed: ImagePolicy,
             problems: list[str]) -> SecretVariables:
    """SECRET_VARIABLES resolved: each variable's value is the app setting it names, and its images
    (loadme.secret_binding) when bound."""
    from loadme.secret_binding import SecretVariables, outside, parse_entry

    secrets: dict[str, str] = {}
    images: dict[str, ImagePolicy] = {}
    for var_name, entry in mapping.items():
        if not var_name.startswith(prefix) or not PREFIX_PATTERN.match(var_name[len(prefix):] or "-"):
            problems.append(f"SECRET_VARIABLES: {var_name!r} is not a valid variable name")
            continue
        setting_name, policy, wrong = parse_entry(var_name, entry)
        problems.extend(wrong)
        if policy is not None and allowed.entries and (never := outside(policy, allowed)):
            problems.append(f"SECRET_VARIABLES: {var_name}: image(s) {', '.join(never)} are outside ALLOWED_IMAGES "
                            f"({allowed.describe()}): the secret could never go there")
        if wrong or not setting_name:
            continue
        if not env.get(setting_name):
            problems.append(f"SECRET_VARIABLES: {var_name} refers to setting {setting_name!r}, which is missing")
        elif env[setting_name].startswith(KEY_VAULT_REFERENCE):
            problems.append(f"SECRET_VARIABLES: {var_name}: setting {setting_name} {UNRESOLVED}")
        else:
            secrets[var_name] = env[setting_name]
            if policy is not None:
                images[var_name] = policy
    return SecretVariables(secrets, images)


# ---- what function_app.py reads at import (trigger parameters) ----------------------------------
def is_set(name: str, env: Mapping[str, str] | None = None) -> bool:
    """True when app setting `name` has a value."""
    return bool(str((os.environ if env is None else env).get(name) or "").strip())


def binding_schedule(name: str, env: Mapping[str, str] | None = None) -> str:
    """A timer's `schedule`: `%NAME%` (the host resolves it) when set, else the table's default."""
    return f"%{name}%" if is_set(name, env) else str(BY_NAME[name].default)


def value(name: str, env: Mapping[str, str] | None = None) -> Any:
    """One setting's parsed value (its default when unset or invalid), without validating the rest."""
    setting = BY_NAME[name]
    raw = setting.raw(os.environ if env is None else env)
    try:
        return setting.parse(raw) if raw is not None else None
    except ValueError:
        return setting.parse(setting.default) if setting.default is not None else None


# ---- the README's table ------------------------------------------------------------------------
def markdown_table() -> str:
    """The settings table of the README, rendered from SETTINGS."""
    lines = ["| setting | needed | default | meaning |", "|---|---|---|---|"]
    for setting in SETTINGS:
        default = f"`{setting.default}`" if setting.default else ""
        lines.append(f"| `{setting.name}` | {setting.needed} | {default} | {setting.doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")


def worker_threads() -> int:
    """The Python worker's thread pool size (the worker's own setting, not one of this table's):
    PYTHON_THREADPOOL_THREAD_COUNT, else ThreadPoolExecutor's
    default min(32, cpus + 4) (azure_functions_runtime utils/threadpool.py start_threadpool_executor)."""
    configured = os.environ.get("PYTHON_THREADPOOL_THREAD_COUNT", "")
    if configured.isdigit() and int(configured) >= 1:
        return int(configured)
    return min(32, (os.cpu_count() or 1) + 4)
