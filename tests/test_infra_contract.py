"""Contract between the code and infra/main.json: every setting the code requires is set by the template (and by
nothing secret), every queue, table and container the code uses is created by it, identities get only the roles
they need, re-deploys merge settings instead of replacing them, and the templates validate offline."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from typing import Any

import pytest

from loadme.errors import SettingsError
from loadme.names import TRIGGER_QUEUES, poison_queue
from loadme.settings import STORAGE_ACCOUNT_SETTING, STORAGE_SETTING, Settings
from tests.arm_expressions import Evaluator, is_expression, parse
from tests.infra_model import (
    CONNECTION_STRING,
    MAIN,
    PARAMETERS_FILE,
    REPO,
    app_settings,
    as_the_app_sees_them,
    client_id,
    deployment_outputs,
    evaluator,
    file_values,
    management,
    management_deployment,
    management_parameters,
    outer_parameters,
    resources,
    site,
    site_child,
)

SHARED = REPO.parent / "shared"
# Settings the code refuses to run without (with the template's choices: aci, identity-based storage).
CODE_REQUIRES_FOR_ACI = {STORAGE_ACCOUNT_SETTING, "EXECUTOR", "RESULT_KEY", "RESULT_AUTH", "DEFAULT_IMAGE",
                         "AZURE_SUBSCRIPTION_ID", "DEPLOYMENT_RESOURCE_GROUP", "ACI_LOCATION",
                         "TEMPLATE_SPEC_VERSION_ID", "CONTAINER_IDENTITY_ID", "CONTAINER_IDENTITY_CLIENT_ID",
                         "REGISTRY_SERVER"}
# Settings the infrastructure owns although the code does not read them yet (issue 9 and the coming app changes).
INFRA_SETTINGS = {"AzureWebJobsStorage__credential", "AzureWebJobsStorage__clientId", "AZURE_CLIENT_ID",
                  "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                  "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY", "PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME",
                  "ALLOWED_IMAGES", "RUN_RETENTION_DAYS", "SECRET_VARIABLES"}
# Flex Consumption refuses or ignores these (functionAppConfig replaces them) and a key-based connection is gone.
NEVER_SET = {STORAGE_SETTING, "FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
             "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING", "WEBSITE_CONTENTSHARE", "APPINSIGHTS_INSTRUMENTATIONKEY"}
APP_IDENTITY = "loadme-app-"
# Built-in role ids, checked against Azure's built-in roles list (MicrosoftDocs/azure-docs,
# articles/role-based-access-control/built-in-roles.md; infra/README.md has the table).
BUILT_IN_ROLES = {
    "7f951dda-4ed3-4680-a7ca-43fe172d538d": "AcrPull",
    "b86a8fe4-44ce-4948-aee5-eccb2c155cd7": "Key Vault Secrets Officer",
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",
    "f1a07417-d97a-45cb-824c-7a7467783830": "Managed Identity Operator",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "c6a89b2d-59bc-44d0-9896-0f6e12d7b80a": "Storage Queue Data Message Sender",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
    "392ae280-861d-42bd-9ea5-08ee6d83b80e": "Template Spec Reader",
}


def _settings_without(name: str, template_settings: dict[str, str]) -> list[str]:
    try:
        Settings.from_mapping(as_the_app_sees_them({k: v for k, v in template_settings.items() if k != name}))
    except SettingsError as err:
        return list(err.problems)
    return []


def test_the_template_sets_every_setting_the_code_requires() -> None:
    settings = Settings.from_mapping(as_the_app_sees_them(app_settings()))
    assert settings.executor == "aci" and settings.aci is not None
    assert settings.result_auth == "identity"  # the containers post with their identity: no SAS, no key
    assert settings.storage_connection_string is None
    assert settings.storage_account_name == management_parameters()["prefix"] + "st" + management_parameters()["suffix"]


def test_the_settings_object_requires_what_the_contract_names() -> None:
    env = app_settings()
    required = set()
    for name in env:
        problems = _settings_without(name, env)
        if problems:
            # the identity-based connection is reported under its base name
            reported = STORAGE_SETTING if name == STORAGE_ACCOUNT_SETTING else name
            assert any(p.startswith(reported) for p in problems), problems
            required.add(name)
    assert required == CODE_REQUIRES_FOR_ACI


def test_the_infrastructure_settings_are_set_and_the_flex_deprecated_ones_are_not() -> None:
    env = app_settings()
    assert env.keys() >= INFRA_SETTINGS
    assert not NEVER_SET & env.keys()


def test_storage_telemetry_and_the_app_code_all_use_the_apps_user_assigned_identity() -> None:
    env = app_settings()
    app_client = client_id(f"{APP_IDENTITY}{management_parameters()['suffix']}")
    assert env["AzureWebJobsStorage__credential"] == "managedidentity"
    assert env["AzureWebJobsStorage__clientId"] == app_client
    assert env["AZURE_CLIENT_ID"] == app_client  # DefaultAzureCredential in loadme picks this identity
    assert env["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == f"Authorization=AAD;ClientId={app_client}"
    assert env["APPLICATIONINSIGHTS_CONNECTION_STRING"] == CONNECTION_STRING
    assert env["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"] == "true"
    from loadme.telemetry import logger
    assert logger.name.startswith(env["PYTHON_APPLICATIONINSIGHTS_LOGGER_NAME"] + ".")
    assert env["CONTAINER_IDENTITY_CLIENT_ID"] == client_id(f"loadme-containers-{management_parameters()['suffix']}")


def _vault_reference(secret: str) -> str:
    vault = f"loadme-kv-{management_parameters()['suffix']}"
    return f"@Microsoft.KeyVault(SecretUri=https://{vault}.vault.azure.net/secrets/{secret}/)"


def test_result_key_is_a_versionless_key_vault_reference() -> None:
    assert app_settings()["RESULT_KEY"] == _vault_reference("result-key")
    assert "resultKey" not in MAIN["parameters"]  # no longer passed through the deployment


def test_secret_variables_become_key_vault_references_the_code_resolves() -> None:
    env = app_settings({"secretVariables": {"___ApiToken": "api-token", "___DbPassword": "db-password"}})
    assert json.loads(env["SECRET_VARIABLES"]) == {"___ApiToken": "SECRET_API_TOKEN",
                                                   "___DbPassword": "SECRET_DB_PASSWORD"}
    assert env["SECRET_API_TOKEN"] == _vault_reference("api-token")
    assert env["SECRET_DB_PASSWORD"] == _vault_reference("db-password")
    settings = Settings.from_mapping(as_the_app_sees_them(env))
    assert set(settings.secret_variables) == {"___ApiToken", "___DbPassword"}


def test_secret_images_bind_the_variables_they_list_and_leave_the_others_unbound() -> None:
    registry = app_settings()["REGISTRY_SERVER"]
    bound = ["myacr.azurecr.io/jobs/etl", f"{registry}/nightly/"]
    env = app_settings({"secretVariables": {"___ApiToken": "api-token", "___DbPassword": "db-password"},
                        "secretImages": {"___DbPassword": bound},
                        "allowedImages": [f"{registry}/", "myacr.azurecr.io/jobs/"]})
    assert json.loads(env["SECRET_VARIABLES"]) == {
        "___ApiToken": "SECRET_API_TOKEN",
        "___DbPassword": {"setting": "SECRET_DB_PASSWORD", "images": bound}}
    assert env["SECRET_DB_PASSWORD"] == _vault_reference("db-password")  # bound or not, the same reference
    secrets = Settings.from_mapping(as_the_app_sees_them(env)).secret_variables
    assert secrets["___DbPassword"] == "resolved-secret-db-password-0123456789abcdefghij"
    assert secrets.images("___ApiToken") is None
    for image in ("myacr.azurecr.io/jobs/etl:2", f"{registry}/nightly/report:1"):
        assert secrets.refusal("___DbPassword", image) == "", image
        assert secrets.refusal("___ApiToken", image) == "", image
    for image in ("myacr.azurecr.io/jobs/etl-copy:2", "myacr.azurecr.io/jobs/other:1", f"{registry}/loadme-runner:1"):
        assert "may not go to image" in secrets.refusal("___DbPassword", image), image
        assert secrets.refusal("___ApiToken", image) == "", image
    # an image the allow-list never admits: the app refuses to start rather than keep a secret nowhere
    outside = app_settings({"secretVariables": {"___DbPassword": "db-password"},
                            "secretImages": {"___DbPassword": ["myacr.azurecr.io/jobs/etl"]}})
    with pytest.raises(SettingsError, match=r"SECRET_VARIABLES: ___DbPassword: image\(s\) .* are outside"):
        Settings.from_mapping(as_the_app_sees_them(outside))


def test_no_app_setting_output_or_parameter_holds_a_key_or_a_secret() -> None:
    env = app_settings({"secretVariables": {"___ApiToken": "api-token"}})
    key_like = re.compile(r"AccountKey=|SharedAccessSignature|[?&]sig=|-----BEGIN|password", re.IGNORECASE)
    for name, value in env.items():
        assert not key_like.search(value), name
        if name == "RESULT_KEY" or (name.startswith("SECRET_") and name != "SECRET_VARIABLES"):
            assert value.startswith("@Microsoft.KeyVault(SecretUri=https://"), name
    # The connection string carries an instrumentation key, which is not a credential: local auth is off, so
    # ingestion needs the identity's Entra token (test_monitoring_contract checks DisableLocalAuth).
    text = json.dumps(MAIN)
    assert "listKeys" not in text and "listAccountSas" not in text and "listServiceSas" not in text
    for template in (MAIN, management()):
        for name, declaration in template["parameters"].items():
            # the app's current settings are passed to the child deployment as a secureObject (F4): secure, so
            # their values stay out of the deployment history; no other parameter may carry a secret
            secure = declaration["type"].lower() in ("securestring", "secureobject")
            assert not secure or (template is not MAIN and name == "existingAppSettings"), name
        assert not key_like.search(json.dumps(template.get("outputs", {})))
    assert not key_like.search(json.dumps(deployment_outputs()))


def test_operator_settings_come_from_the_parameters_file() -> None:
    values = file_values()
    assert set(values) <= set(MAIN["parameters"])
    env = app_settings({**values, "scheduledInitSchedule": "0 0 6 * * *", "runRetentionDays": 7,
                        "scheduledInitVariables": {"___Name": "nightly"}, "allowedImages": ["myacr.azurecr.io/jobs/"],
                        "extraAppSettings": {"RUN_TIMEOUT_SECONDS": "900"}})
    assert env["SCHEDULED_INIT_SCHEDULE"] == "0 0 6 * * *"
    assert json.loads(env["SCHEDULED_INIT_VARIABLES"]) == {"___Name": "nightly"}
    assert env["RUN_RETENTION_DAYS"] == "7"
    assert json.loads(env["ALLOWED_IMAGES"]) == ["myacr.azurecr.io/jobs/"]
    assert env["RUN_TIMEOUT_SECONDS"] == "900"
    # An allow-list without the registry of DEFAULT_IMAGE would refuse every run that names no image: the app
    # says so at start instead of answering 403 to each of them.
    with pytest.raises(SettingsError, match=r"DEFAULT_IMAGE: .* is not allowed by ALLOWED_IMAGES"):
        Settings.from_mapping(as_the_app_sees_them(env))
    consistent = {**env, "ALLOWED_IMAGES": json.dumps(["myacr.azurecr.io/jobs/", env["REGISTRY_SERVER"] + "/"])}
    assert Settings.from_mapping(as_the_app_sees_them(consistent)).schedule == "0 0 6 * * *"


def test_allowed_images_default_to_this_deployments_registry_and_admit_the_default_image() -> None:
    env = app_settings()
    allowed = json.loads(env["ALLOWED_IMAGES"])
    assert allowed == [env["REGISTRY_SERVER"] + "/"]
    assert env["DEFAULT_IMAGE"].startswith(tuple(allowed))
    assert env["RUN_RETENTION_DAYS"] == "30"


def test_the_current_settings_are_read_by_the_parent_and_passed_as_a_secure_object() -> None:
    """F4: an appsettings resource that list()s itself is refused as a circular dependency
    (polymind-inc/acmebot#1089, claestom/azure-monitor-lab PR 17); the subscription-level template reads them
    (it does not deploy the app) and passes them to the management deployment as a secureObject."""
    assert "list(" not in json.dumps(management())
    passed = management_deployment()["properties"]["parameters"]["existingAppSettings"]["value"]
    assert passed.startswith("[if(parameters('appExists'), list(resourceId(parameters('managementResourceGroup'), "
                             "'Microsoft.Web/sites/config', variables('functionName'), 'appsettings')")
    assert management()["parameters"]["existingAppSettings"]["type"] == "secureObject"
    assert site_child("appsettings")["properties"].startswith("[union(parameters('existingAppSettings'), ")
    # the parent computes the same app name the management template creates
    outer_name = Evaluator(outer_parameters(), MAIN["variables"]).evaluate("[variables('functionName')]")
    assert outer_name == deployment_outputs()["functionName"]["value"]
    assert management_parameters()["existingAppSettings"] == {}  # first deployment: nothing is read


def test_a_redeploy_keeps_settings_an_operator_added_and_restores_what_the_template_owns() -> None:
    first = app_settings()
    portal = {**first, "OPERATOR_NOTE": "added in the portal", "EXECUTOR": "local"}
    second = app_settings(existing_settings=portal)
    assert second["OPERATOR_NOTE"] == "added in the portal"
    assert second["EXECUTOR"] == "aci"
    assert second == {**first, "OPERATOR_NOTE": "added in the portal"}
    assert app_settings(existing_settings=second) == second  # a third run changes nothing
    # extra settings from the parameters file cannot override what the template owns
    assert app_settings({"extraAppSettings": {"EXECUTOR": "local"}})["EXECUTOR"] == "aci"


def test_every_queue_table_and_container_the_code_uses_is_created() -> None:
    inner = management()
    names = " ".join(str(r["name"]) for r in resources(inner))
    queue_names = set(re.findall(r"/default/([a-z0-9-]+)'", names))  # literal child names
    for queue in TRIGGER_QUEUES:
        assert queue in queue_names and poison_queue(queue) in queue_names
    ev = evaluator()
    tables = {ev.evaluate(r["name"]).rsplit("/", 1)[-1] for r in resources(inner)
              if r["type"].endswith("tableServices/tables")}
    containers = {ev.evaluate(r["name"]).rsplit("/", 1)[-1] for r in resources(inner)
                  if r["type"].endswith("blobServices/containers")}
    settings = Settings.from_mapping(as_the_app_sees_them(app_settings()))
    assert tables == {settings.journal_table, "loadmeadmission"}
    assert containers == {settings.logs_container, "app-package"}


def test_flex_consumption_python_313_with_identity_based_deployment_storage() -> None:
    inner = management()
    plan = next(r for r in inner["resources"] if r["type"] == "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    ev = evaluator()
    app = ev.evaluate(site())
    config = app["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.13"}
    storage = config["deployment"]["storage"]
    app_identity = next(iter(app["identity"]["userAssignedIdentities"]))
    assert app["identity"]["type"] == "UserAssigned" and app_identity.endswith(
        f"/userAssignedIdentities/{APP_IDENTITY}{management_parameters()['suffix']}")
    assert storage["type"] == "blobContainer" and storage["value"].endswith(".blob.core.windows.net/app-package")
    assert storage["authentication"] == {"type": "UserAssignedIdentity", "userAssignedIdentityResourceId": app_identity}
    assert app["properties"]["keyVaultReferenceIdentity"] == app_identity
    assert "linuxFxVersion" not in app["properties"]["siteConfig"]
    account = next(r for r in inner["resources"] if r["type"] == "Microsoft.Storage/storageAccounts")
    assert account["properties"]["allowSharedKeyAccess"] is False
    assert account["properties"]["allowBlobPublicAccess"] is False


def test_basic_auth_publishing_is_off() -> None:
    for kind in ("scm", "ftp"):
        policy = site_child(kind)
        assert policy["type"] == "basicPublishingCredentialsPolicies" and policy["properties"] == {"allow": False}


def test_key_vault_uses_rbac_with_soft_delete_and_purge_protection() -> None:
    vault = next(r for r in management()["resources"] if r["type"] == "Microsoft.KeyVault/vaults")
    props = vault["properties"]
    assert props["enableRbacAuthorization"] is True and "accessPolicies" not in props
    assert props["enableSoftDelete"] is True and props["enablePurgeProtection"] is True
    assert props["softDeleteRetentionInDays"] >= 7


def _role_assignments() -> list[dict[str, Any]]:
    ev = evaluator({"deployerPrincipalId": "deployer-object-id"})
    found = []
    for r in resources(management()):
        if r["type"] == "Microsoft.Authorization/roleAssignments":
            found.append({"role": ev.evaluate(r["properties"]["roleDefinitionId"]).rsplit("/", 1)[-1],
                          "principal": ev.evaluate(r["properties"]["principalId"]),
                          "scope": ev.evaluate(r["scope"]),
                          "condition": r.get("condition")})
    return found


def test_every_role_is_a_verified_built_in_role_at_the_narrowest_scope() -> None:
    suffix = management_parameters()["suffix"]
    app, containers = f"principal-id-of-loadme-app-{suffix}", f"principal-id-of-loadme-containers-{suffix}"
    storage = f"Microsoft.Storage/storageAccounts/loadmest{suffix}"
    granted = {(BUILT_IN_ROLES[a["role"]], a["principal"], a["scope"]) for a in _role_assignments()}
    assert granted == {
        ("Storage Blob Data Owner", app, storage),
        ("Storage Queue Data Contributor", app, storage),
        ("Storage Table Data Contributor", app, f"{storage}/tableServices/default/tables/loadmeruns"),
        ("Storage Table Data Contributor", app, f"{storage}/tableServices/default/tables/loadmeadmission"),
        ("Key Vault Secrets User", app, f"Microsoft.KeyVault/vaults/loadme-kv-{suffix}"),
        ("Monitoring Metrics Publisher", app, f"Microsoft.Insights/components/loadme-ai-{suffix}"),
        ("Managed Identity Operator", app,
         f"Microsoft.ManagedIdentity/userAssignedIdentities/loadme-containers-{suffix}"),
        ("Template Spec Reader", app, "Microsoft.Resources/templateSpecs/loadme-aci"),
        ("AcrPull", containers, f"Microsoft.ContainerRegistry/registries/loadmeacr{suffix}"),
        ("Storage Queue Data Message Sender", containers, f"{storage}/queueServices/default/queues/stage2"),
        ("Key Vault Secrets Officer", "deployer-object-id", f"Microsoft.KeyVault/vaults/loadme-kv-{suffix}"),
    }
    deployer = next(a for a in _role_assignments() if a["principal"] == "deployer-object-id")
    assert deployer["condition"] == "[not(empty(parameters('deployerPrincipalId')))]"


def test_the_containers_identity_has_no_storage_role_but_sending_to_stage2() -> None:
    """H3: a job can get the containers' identity's token from IMDS, so that identity holds no blob role at all;
    each step's container uploads its log with a per-blob user-delegation SAS the app mints. Its only storage
    role is Message Sender on the stage2 queue."""
    containers = f"principal-id-of-loadme-containers-{management_parameters()['suffix']}"
    storage_roles = {(BUILT_IN_ROLES[a["role"]], a["scope"].split("/", 3)[-1]) for a in _role_assignments()
                     if a["principal"] == containers and a["scope"].startswith("Microsoft.Storage/")}
    assert storage_roles == {("Storage Queue Data Message Sender", "queueServices/default/queues/stage2")}


def test_the_app_identity_can_get_a_user_delegation_key() -> None:
    """The app signs each log blob's user-delegation SAS: Get User Delegation Key needs
    Microsoft.Storage/storageAccounts/blobServices/generateUserDelegationKey/action, which Storage Blob Data Owner
    grants (MicrosoftDocs/azure-docs articles/role-based-access-control/built-in-roles/storage.md, 'Storage Blob
    Data Owner': actions blobServices/containers/* and blobServices/generateUserDelegationKey/action)."""
    app = f"principal-id-of-loadme-app-{management_parameters()['suffix']}"
    storage = f"Microsoft.Storage/storageAccounts/loadmest{management_parameters()['suffix']}"
    assert ("Storage Blob Data Owner", app, storage) in {
        (BUILT_IN_ROLES[a["role"]], a["principal"], a["scope"]) for a in _role_assignments()}


def test_the_app_manages_container_groups_in_the_runs_group_only_through_a_custom_role() -> None:
    role = next(r for r in MAIN["resources"] if r["type"] == "Microsoft.Authorization/roleDefinitions")
    actions = role["properties"]["permissions"][0]["actions"]
    assert all(a.startswith(("Microsoft.ContainerInstance/containerGroups/", "Microsoft.Resources/deployments/",
                             "Microsoft.Resources/subscriptions/resourceGroups/read")) for a in actions)
    assert role["properties"]["assignableScopes"] == [
        "[subscriptionResourceId('Microsoft.Resources/resourceGroups', parameters('deploymentResourceGroup'))]"]
    access = next(r for r in MAIN["resources"] if r["name"] == "loadme-runs-access")
    assert ".outputs.appPrincipalId.value" in access["properties"]["parameters"]["functionPrincipalId"]["value"]


def test_the_app_can_delete_the_deployments_it_creates() -> None:
    """F1: ARM's automatic history deletion runs as the deploying identity and needs
    Microsoft.Resources/deployments/delete (MicrosoftDocs/azure-docs
    articles/azure-resource-manager/templates/deployment-history-deletions.md); without it the runs group hits
    800 deployments and every step fails with DeploymentQuotaExceeded. The app also deletes each step's
    deployment once its group is gone."""
    role = next(r for r in MAIN["resources"] if r["type"] == "Microsoft.Authorization/roleDefinitions")
    actions = role["properties"]["permissions"][0]["actions"]
    assert {"Microsoft.Resources/deployments/read", "Microsoft.Resources/deployments/write",
            "Microsoft.Resources/deployments/delete"} <= set(actions)


def test_the_custom_role_name_is_unique_in_the_tenant() -> None:
    """F2: a custom role's display name must be unique in the Microsoft Entra tenant (MicrosoftDocs/azure-docs
    articles/role-based-access-control/custom-roles.md, roleName): two subscriptions deploying the default
    runs group name must get two names."""
    role = next(r for r in MAIN["resources"] if r["type"] == "Microsoft.Authorization/roleDefinitions")
    name = Evaluator(outer_parameters()).evaluate(role["properties"]["roleName"])
    assert Evaluator.SUBSCRIPTION in name and "loadme-runs" in name


def test_depends_on_names_resource_group_deployments_by_their_full_id() -> None:
    """ARM matches dependsOn by full id: a resource-group deployment is resourceId(rg, ...), not subscription-level."""
    for resource in MAIN["resources"]:
        for dependency in resource.get("dependsOn", []):
            if "Microsoft.Resources/deployments" in dependency:
                assert dependency.startswith("[resourceId(parameters('managementResourceGroup'), "), dependency
    outer = Evaluator({"managementResourceGroup": "loadme-mgmt"})
    access = next(r for r in MAIN["resources"] if r["name"] == "loadme-runs-access")
    dependency = next(d for d in access["dependsOn"] if "deployments" in d)
    assert outer.evaluate(dependency).endswith(
        "/resourceGroups/loadme-mgmt/providers/Microsoft.Resources/deployments/loadme-management")


def test_entra_authentication_is_off_by_default_and_returns_401_when_on() -> None:
    auth = site_child("authsettingsV2")
    assert auth["condition"] == "[parameters('entraAuthEnabled')]"
    assert MAIN["parameters"]["entraAuthEnabled"]["defaultValue"] is False
    on = evaluator({"entraAuthEnabled": True, "entraClientId": "11111111-2222-3333-4444-555555555555"})
    props = on.evaluate(auth["properties"])
    assert props["globalValidation"]["requireAuthentication"] is True
    assert props["globalValidation"]["unauthenticatedClientAction"] == "Return401"
    assert props["globalValidation"]["excludedPaths"] == ["/api/openapi.json"]
    aad = props["identityProviders"]["azureActiveDirectory"]
    assert aad["registration"]["clientId"] == "11111111-2222-3333-4444-555555555555"
    assert aad["validation"]["allowedAudiences"] == ["api://11111111-2222-3333-4444-555555555555"]
    policy = aad["validation"]["defaultAuthorizationPolicy"]
    assert policy == {"allowedApplications": [], "allowedPrincipals": {"identities": []}}
    closed = evaluator({"entraAuthEnabled": True, "entraClientId": "x", "openApiAnonymous": False,
                        "entraAllowedAudiences": ["api://loadme"]}).evaluate(auth["properties"])
    assert closed["globalValidation"]["excludedPaths"] == []
    assert closed["identityProviders"]["azureActiveDirectory"]["validation"]["allowedAudiences"] == ["api://loadme"]


def test_with_entra_on_only_the_listed_applications_and_principals_get_in() -> None:
    """L6: without a default authorization policy every principal of the tenant that can get a token passes."""
    auth = site_child("authsettingsV2")
    props = evaluator({"entraAuthEnabled": True, "entraClientId": "x",
                       "entraAllowedApplications": ["04b07795-8ddb-461a-bbee-02f9e1bf7b46"],
                       "entraAllowedPrincipals": ["object-id-of-ops-group-member"]}).evaluate(auth["properties"])
    policy = props["identityProviders"]["azureActiveDirectory"]["validation"]["defaultAuthorizationPolicy"]
    assert policy == {"allowedApplications": ["04b07795-8ddb-461a-bbee-02f9e1bf7b46"],
                      "allowedPrincipals": {"identities": ["object-id-of-ops-group-member"]}}


def test_flex_instance_sizes_and_scale_limit_follow_the_current_docs() -> None:
    """F11: Flex offers 512, 2048 and 4096 MB instances (MicrosoftDocs/azure-docs
    articles/azure-functions/flex-consumption-plan.md, 'Instance sizes', 05/2025); the maximum instance count
    'must be set to a value of 40 or higher' (Microsoft's Consumption-to-Flex migration guide), so 40 stays."""
    assert MAIN["parameters"]["instanceMemoryMB"]["allowedValues"] == [512, 2048, 4096]
    assert MAIN["parameters"]["maximumInstanceCount"]["minValue"] == 40
    config = evaluator({"instanceMemoryMB": 512}).evaluate(site())["properties"]["functionAppConfig"]
    assert config["scaleAndConcurrency"]["instanceMemoryMB"] == 512


def test_infra_templates_validate_offline() -> None:
    validator = SHARED / "arm" / "armvalidate.py"
    assert validator.exists(), f"{validator} is missing: CI runs with ../shared beside the checkout"
    templates = sorted(str(p) for p in (REPO / "infra").glob("*.json") if not p.name.endswith(".parameters.json"))
    result = subprocess.run([sys.executable, str(validator), "--strict", "--relax", *templates],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_parameters_file_is_a_valid_deployment_parameters_file() -> None:
    assert PARAMETERS_FILE["$schema"].endswith("/deploymentParameters.json#")
    values = file_values()
    for name, value in values.items():
        declaration = MAIN["parameters"][name]
        expected = {"string": str, "int": int, "bool": bool, "object": dict, "array": list}[declaration["type"]]
        assert isinstance(value, expected), name
        assert "allowedValues" not in declaration or value in declaration["allowedValues"], name
    assert app_settings(values) == app_settings()  # the shipped file keeps the template's defaults


def test_a_template_without_a_required_setting_breaks_the_contract() -> None:
    broken = copy.deepcopy(app_settings())
    del broken["RESULT_KEY"]
    with pytest.raises(SettingsError) as err:
        Settings.from_mapping(as_the_app_sees_them(broken))
    assert any(p.startswith("RESULT_KEY") for p in err.value.problems)


def _expressions(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [e for k, v in node.items() for e in _expressions(k) + _expressions(v)]
    if isinstance(node, list):
        return [e for v in node for e in _expressions(v)]
    return [node] if is_expression(node) else []


@pytest.mark.parametrize("path", ["infra/main.json", "templates/aci.json"])
def test_every_expression_in_the_templates_parses(path: str) -> None:
    """A stray quote inside an ARM string literal fails the whole deployment; the offline schema check misses it."""
    template = json.loads((REPO / path).read_text())
    expressions = _expressions(template)
    assert expressions
    for expression in expressions:
        parse(expression[1:-1])


@pytest.mark.parametrize("prefix", ["abc", "loadme", "abcdefghij"])
def test_computed_names_follow_azure_naming_rules(prefix: str) -> None:
    names = evaluator({"prefix": prefix}).evaluate({k: f"[variables('{k}')]" for k in (
        "storageName", "registryName", "keyVaultName", "functionName", "workspaceName", "insightsName")})
    assert re.fullmatch(r"[a-z0-9]{3,24}", names["storageName"])
    assert re.fullmatch(r"[a-zA-Z0-9]{5,50}", names["registryName"])
    assert re.fullmatch(r"[a-zA-Z](?:[a-zA-Z0-9]|-(?!-)){1,22}[a-zA-Z0-9]", names["keyVaultName"])
    assert re.fullmatch(r"[a-z0-9](?:[a-z0-9-]{0,58}[a-z0-9])?", names["functionName"])
    assert len(names["workspaceName"]) <= 63 and len(names["insightsName"]) <= 260


def test_every_checkov_skip_has_its_reason_beside_it() -> None:
    lines = (REPO / ".checkov.yaml").read_text().splitlines()
    start = lines.index("skip-check:")
    skips = [line for line in lines[start + 1:] if line.strip().startswith("- ")]
    assert skips
    for line in skips:
        match = re.fullmatch(r"\s*- (CKV2?_[A-Z]+_\d+)\s+# (.+)", line)
        assert match and len(match.group(2)) > 40, line
