"""A stand-in for the `az` CLI that infra/deploy.sh calls, for tests (there is no Azure here).

State lives in the JSON file named by FAKE_AZ_STATE (what exists: providers, app, settings, secrets, published
template spec versions; how the code upload answers); every call is appended to FAKE_AZ_LOG with its arguments.
`az deployment sub create` applies the app settings the way ARM would, by evaluating infra/main.json
(tests/infra_model.py), so the test sees what a re-deploy does to operator settings.

A deploy.sh run starts this a few dozen times (tests/test_deploy_script.py runs it as `python -I -S`): only
json, os and sys are imported for every call, the rest where a call needs it, since each import is paid per call.
"""

from __future__ import annotations

import json
import os
import sys

TYPE_CHECKING = False  # typing costs a fifth of a call's start-up; mypy honours any name TYPE_CHECKING
if TYPE_CHECKING:
    from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))

SUBSCRIPTION = "00000000-0000-0000-0000-000000000001"
FUNCTION_KEY = "fake-default-function-key-0123456789"


def _option(args: list[str], *names: str) -> str | None:
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            return args[i + 1]
    return None


def _parameters(args: list[str]) -> dict[str, Any]:
    """--parameters @file and --parameters k=v ..., later ones winning, as the CLI merges them."""
    values: dict[str, Any] = {}
    i = 0
    while i < len(args):
        if args[i] == "--parameters":
            i += 1
            while i < len(args) and not args[i].startswith("--"):
                item = args[i]
                if item.startswith("@"):
                    with open(item[1:]) as file:
                        content = json.load(file)
                    values.update({k: v["value"] for k, v in content["parameters"].items()})
                else:
                    key, _, raw = item.partition("=")
                    values[key] = {"true": True, "false": False}.get(raw, raw)
                i += 1
        else:
            i += 1
    return values


def main(args: list[str]) -> int:
    state_path = os.environ["FAKE_AZ_STATE"]
    with open(state_path) as file:
        state = json.load(file)
    entry: dict[str, Any] = {"args": args}
    out = ""
    code = 0
    words = " ".join(a for a in args[:3] if not a.startswith("-"))

    def save() -> None:
        with open(state_path, "w") as file:
            file.write(json.dumps(state))

    if words.startswith("account show"):
        query = _option(args, "--query")
        out = {"id": SUBSCRIPTION, "user.type": state.get("user_type", "user"),
               "user.name": "deployer@example.com"}[query or "id"]
    elif words.startswith("ad signed-in-user show"):
        out = "deployer-object-id"
    elif words.startswith("provider show"):
        out = state["providers"].get(_option(args, "--namespace"), "NotRegistered")
    elif words.startswith("provider register"):
        state["providers"][_option(args, "--namespace")] = "Registered"
    elif words.startswith("resource list"):
        out = state.get("app") or ""
    elif words.startswith("functionapp show"):
        query = _option(args, "--query")
        farm = "/subscriptions/x/resourceGroups/loadme-mgmt/providers/Microsoft.Web/serverfarms/plan"
        app_id = f"/subscriptions/x/resourceGroups/loadme-mgmt/providers/Microsoft.Web/sites/{state.get('app')}"
        out = {"serverFarmId": farm, "id": app_id}[query]
    elif words.startswith("resource show"):
        out = state.get("plan_tier", "FlexConsumption")
    elif words.startswith("functionapp config"):  # appsettings list
        query = _option(args, "--query") or ""
        settings = state.get("settings", {})
        out = "\n".join(settings) if query == "[].name" else settings.get("DEFAULT_IMAGE", "")
    elif words.startswith("keyvault list-deleted"):
        out = ""
    elif words.startswith("keyvault list"):
        out = state.get("vault") or ""
    elif words.startswith("deployment sub create"):
        from tests.infra_model import app_settings, deployment_outputs

        values = _parameters(args)
        entry["parameters"] = values
        existing = state.get("settings") if values.get("appExists") else None
        state["settings"] = app_settings(values, existing)
        outputs = deployment_outputs(values, existing)
        state["app"] = outputs["functionName"]["value"]
        state["vault"] = outputs["keyVaultName"]["value"]
        out = json.dumps(outputs)
    elif words.startswith("keyvault secret list-deleted"):
        out = "\n".join(state.get("deleted_secrets", []))
    elif words.startswith("keyvault secret list"):
        out = "\n".join(state.get("secrets", {}))
    elif words.startswith("keyvault secret set"):
        import stat

        path = _option(args, "--file") or ""
        entry["file_mode"] = oct(stat.S_IMODE(os.stat(path).st_mode))
        entry["file"] = path
        with open(path) as file:
            state.setdefault("secrets", {})[_option(args, "--name")] = file.read()
    elif words.startswith("ts create"):
        state.setdefault("spec_versions", []).append(_option(args, "--version"))
    elif words.startswith("ts show"):
        version = _option(args, "--version")
        if version in state.get("spec_versions", []):
            out = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/loadme-mgmt/providers/Microsoft.Resources/" \
                  f"templateSpecs/{_option(args, '--name')}/versions/{version}"
        else:  # what ARM answers for a version that was never published: 404, az exits 3
            sys.stderr.write(f"ERROR: (ResourceNotFound) The Resource 'Microsoft.Resources/templateSpecs/"
                             f"{_option(args, '--name')}/versions/{version}' under resource group "
                             f"'{_option(args, '--resource-group')}' was not found.\n")
            code = 3
    elif words.startswith("functionapp deployment"):
        # Each entry of upload_failures answers one attempt: an HTTP status the publish endpoint refuses with
        # (a fresh storage role: 400 BlobUploadFailedException wrapping a storage 403), or "hang".
        failures = state.get("upload_failures", [])
        if failures:
            failure = failures.pop(0)
            state["upload_failures"] = failures
            if failure == "hang":
                import time

                save()
                time.sleep(60)
            sys.stderr.write(f"ERROR: Failed to deploy the package. Status Code: {failure}, Details: "
                             f"BlobUploadFailedException: This request is not authorized to perform this operation.\n")
            code = 1
        else:
            state["uploads"] = state.get("uploads", 0) + 1
    elif words.startswith(("acr build", "group create")):
        pass
    elif words.startswith("functionapp keys"):
        out = FUNCTION_KEY
    elif words.startswith("ad sp update"):
        state.setdefault("sp_updates", []).append(args)
    elif words.startswith("role assignment delete"):
        state.setdefault("removed_assignments", []).append(_option(args, "--ids"))
    elif words.startswith("rest"):
        out = ""  # refresh accepted; every reference resolved
    else:
        sys.stderr.write(f"fake az: unexpected call {args}\n")
        code = 3
    save()
    with open(os.environ["FAKE_AZ_LOG"], "a") as log:
        log.write(json.dumps(entry) + "\n")
    if out:
        print(out)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
