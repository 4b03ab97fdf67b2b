"""Settings: built from a mapping, every problem reported at once, secrets out of repr."""

from __future__ import annotations

import json

import pytest

from loadme.errors import SettingsError
from loadme.settings import Settings, binding_schedule, is_set, markdown_table, value
from tests.support import REPO_ROOT

VALID = {
    "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "EXECUTOR": "local",
    "RESULT_KEY": "k" * 40,
    "DEFAULT_IMAGE": "loadme-runner:dev",
}


def test_minimal_settings_take_defaults() -> None:
    settings = Settings.from_mapping(VALID)
    assert settings.variable_prefix == "___"
    assert settings.default_command == ("python", "jobs/demo_job.py")
    assert settings.run_timeout_seconds == 3600
    assert settings.result_auth == "sas"
    assert settings.schedule is None
    assert settings.aci is None


def test_every_missing_setting_is_reported_at_once() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping({})
    names = [p.split(":")[0] for p in err.value.problems]
    assert names == ["EXECUTOR", "AzureWebJobsStorage", "RESULT_KEY", "DEFAULT_IMAGE"]


def test_invalid_values_are_named() -> None:
    env = {**VALID, "EXECUTOR": "k8s", "RESULT_KEY": "short", "RUN_TIMEOUT_SECONDS": "soon",
           "DEFAULT_COMMAND": "[]", "DEFAULT_VARIABLES": "{bad", "VARIABLE_PREFIX": "1x",
           "JOURNAL_TABLE": "no-dashes", "LOGS_CONTAINER": "UPPER"}
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping(env)
    text = str(err.value)
    for expected in ("EXECUTOR: 'k8s' is not one of local, aci", "RESULT_KEY: must be at least 32",
                     "RUN_TIMEOUT_SECONDS: 'soon' is not an integer", "DEFAULT_COMMAND: must be a non-empty",
                     "DEFAULT_VARIABLES: not valid JSON", "VARIABLE_PREFIX: must match",
                     "JOURNAL_TABLE: not a valid table name", "LOGS_CONTAINER: not a valid blob container"):
        assert expected in text


def test_default_variables_follow_the_variable_contract() -> None:
    with pytest.raises(SettingsError, match="DEFAULT_VARIABLES: variable ___RunId is reserved"):
        Settings.from_mapping({**VALID, "DEFAULT_VARIABLES": json.dumps({"___RunId": "x"})})


def test_secret_variables_resolve_other_settings() -> None:
    env = {**VALID, "SECRET_VARIABLES": json.dumps({"___Token": "MY_TOKEN"}), "MY_TOKEN": "hunter2-value"}
    settings = Settings.from_mapping(env)
    assert settings.secret_variables == {"___Token": "hunter2-value"}
    assert "hunter2-value" not in repr(settings) and "k" * 40 not in repr(settings)
    with pytest.raises(SettingsError, match="refers to setting 'MY_TOKEN', which is missing"):
        Settings.from_mapping({**env, "MY_TOKEN": ""})


def test_aci_settings_are_required_only_for_aci() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping({**VALID, "EXECUTOR": "aci"})
    names = {p.split(":")[0] for p in err.value.problems}
    assert names == {"AZURE_SUBSCRIPTION_ID", "DEPLOYMENT_RESOURCE_GROUP", "ACI_LOCATION",
                     "TEMPLATE_SPEC_VERSION_ID", "CONTAINER_IDENTITY_ID", "REGISTRY_SERVER"}


def test_identity_storage_needs_identity_result_auth() -> None:
    env = {k: v for k, v in VALID.items() if k != "AzureWebJobsStorage"}
    env["AzureWebJobsStorage__accountName"] = "acct"
    with pytest.raises(SettingsError, match="RESULT_AUTH: 'sas' needs an account key"):
        Settings.from_mapping(env)
    assert Settings.from_mapping({**env, "RESULT_AUTH": "identity"}).storage_account_name == "acct"


def test_unresolved_key_vault_references_are_refused_not_used() -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://loadme-kv.vault.azure.net/secrets/result-key/)"
    env = {**VALID, "RESULT_KEY": reference, "SECRET_VARIABLES": json.dumps({"___Token": "MY_TOKEN"}),
           "MY_TOKEN": reference}
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping(env)
    assert [p.split(":")[0] for p in err.value.problems] == ["RESULT_KEY", "SECRET_VARIABLES"]
    assert all("unresolved Key Vault reference" in p for p in err.value.problems)


def test_the_readme_settings_table_is_the_settings_table() -> None:
    """The README's table is rendered from loadme.settings.SETTINGS (`tools/render-settings-table` rewrites it)."""
    readme = (REPO_ROOT / "README.md").read_text()
    start, end = readme.index("<!-- settings-table -->"), readme.index("<!-- /settings-table -->")
    assert readme[start:end].split("\n", 1)[1].strip() == markdown_table()


def test_only_the_settings_module_reads_the_environment() -> None:
    sources = [REPO_ROOT / "function_app.py", *sorted((REPO_ROOT / "loadme").rglob("*.py"))]
    readers = [str(p.relative_to(REPO_ROOT)) for p in sources if "os.environ" in p.read_text()]
    assert readers == ["loadme/settings.py"]


def test_function_app_takes_its_trigger_parameters_from_the_table() -> None:
    assert binding_schedule("JANITOR_SCHEDULE", {}) == "0 */5 * * * *"
    assert binding_schedule("JANITOR_SCHEDULE", {"JANITOR_SCHEDULE": "*/30 * * * * *"}) == "%JANITOR_SCHEDULE%"
    assert not is_set("SCHEDULED_INIT_SCHEDULE", {"SCHEDULED_INIT_SCHEDULE": "  "})
    assert value("VARIABLE_PREFIX", {}) == "___" and value("VARIABLE_PREFIX", {"VARIABLE_PREFIX": "1bad"}) == "___"


@pytest.mark.parametrize(("prefix", "name"), [
    ("P", "PATH"), ("LD_", "LD_*"), ("PY", "PYTHON*"), ("LOADME_", "LOADME_*"), ("LOAD", "LOADME_*"),
    ("H", "HOME"), ("IDENTITY_", "IDENTITY_ENDPOINT"), ("AZ", "AZURE_*"), ("_", "_JAVA_*"),
])
def test_a_prefix_that_lets_a_variable_take_a_dangerous_name_is_refused(prefix: str, name: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping({**VALID, "VARIABLE_PREFIX": prefix})
    assert f"VARIABLE_PREFIX: {prefix!r} lets a variable be named {name}," in str(err.value)


@pytest.mark.parametrize("prefix", ["___", "__", "JOB_", "Job", "MY_", "X"])
def test_prefixes_that_form_no_dangerous_name_are_accepted(prefix: str) -> None:
    assert Settings.from_mapping({**VALID, "VARIABLE_PREFIX": prefix}).variable_prefix == prefix


def test_secret_variables_bound_to_images_and_the_old_form_together() -> None:
    env = {**VALID, "ALLOWED_IMAGES": json.dumps(["loadme-runner", "myacr.azurecr.io/jobs/"]),
           "MY_TOKEN": "hunter2-value", "MY_DB": "db-password-value",
           "SECRET_VARIABLES": json.dumps({
               "___Token": "MY_TOKEN",
               "___Db": {"setting": "MY_DB", "images": ["myacr.azurecr.io/jobs/etl", "MyAcr.azurecr.io/jobs/sub/"]}})}
    secrets = Settings.from_mapping(env).secret_variables
    assert secrets == {"___Token": "hunter2-value", "___Db": "db-password-value"}
    assert "hunter2" not in repr(secrets) and "db-password" not in repr(secrets)
    assert secrets.images("___Token") is None  # the old form: any allowed image
    assert secrets.refusal("___Token", "myacr.azurecr.io/jobs/anything:1") == ""
    for allowed in ("myacr.azurecr.io/jobs/etl:2", "myacr.azurecr.io/jobs/sub/x@sha256:" + "a" * 64):
        assert secrets.refusal("___Db", allowed) == "", allowed
    assert secrets.refusal("___Db", "myacr.azurecr.io/jobs/etl2:1") == (
        "secret ___Db may not go to image 'myacr.azurecr.io/jobs/etl2:1': SECRET_VARIABLES binds it to "
        "myacr.azurecr.io/jobs/etl, myacr.azurecr.io/jobs/sub/ (an operator adds the image to its \"images\" there)")


def test_every_problem_of_a_bound_secret_is_named() -> None:
    env = {**VALID, "ALLOWED_IMAGES": json.dumps(["myacr.azurecr.io/jobs/", "loadme-runner"]), "SET": "value-1",
           "SECRET_VARIABLES": json.dumps({
               "___NoImages": {"setting": "SET"},
               "___EmptyImages": {"setting": "SET", "images": []},
               "___NoSetting": {"images": ["myacr.azurecr.io/jobs/etl"]},
               "___Typo": {"setting": "SET", "images": ["myacr.azurecr.io/jobs/etl"], "image": "x"},
               "___Outside": {"setting": "SET", "images": ["otheracr.azurecr.io/", "myacr.azurecr.io/"]},
               "___Missing": {"setting": "NOT_SET", "images": ["myacr.azurecr.io/jobs/etl"]},
               "___Number": 7})}
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping(env)
    problems = "\n".join(err.value.problems)
    for expected in (
        "SECRET_VARIABLES: ___NoImages: \"images\" must be a non-empty JSON array",
        "SECRET_VARIABLES: ___EmptyImages: \"images\" must be a non-empty JSON array",
        "SECRET_VARIABLES: ___NoSetting: \"setting\" must name the app setting",
        "SECRET_VARIABLES: ___Typo: unknown key(s) image; allowed: setting, images",
        # a prefix wider than ALLOWED_IMAGES overlaps it; another registry never does
        "SECRET_VARIABLES: ___Outside: image(s) otheracr.azurecr.io/ are outside ALLOWED_IMAGES",
        "SECRET_VARIABLES: ___Missing refers to setting 'NOT_SET', which is missing",
        "SECRET_VARIABLES: ___Number: must be a setting name or an object",
    ):
        assert expected in problems
    assert "value-1" not in problems
    with pytest.raises(SettingsError, match="SECRET_VARIABLES: must be a JSON object"):
        Settings.from_mapping({**VALID, "SECRET_VARIABLES": "[]"})


def test_timer_runs_may_name_only_secrets_bound_to_the_default_image() -> None:
    env = {**VALID, "ALLOWED_IMAGES": json.dumps(["loadme-runner", "myacr.azurecr.io/"]), "SET": "value-1",
           "SECRET_VARIABLES": json.dumps({"___Db": {"setting": "SET", "images": ["myacr.azurecr.io/etl"]}}),
           "SCHEDULED_INIT_SECRETS": json.dumps(["___Db"])}
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping(env)
    assert err.value.problems == [
        "SCHEDULED_INIT_SECRETS: secret ___Db may not go to image 'loadme-runner:dev': SECRET_VARIABLES binds it "
        "to myacr.azurecr.io/etl (an operator adds the image to its \"images\" there); timer-started runs use "
        "DEFAULT_IMAGE"]
    bound_here = json.dumps({"___Db": {"setting": "SET", "images": ["loadme-runner"]}})
    assert Settings.from_mapping({**env, "SECRET_VARIABLES": bound_here}).scheduled_secrets == ("___Db",)
