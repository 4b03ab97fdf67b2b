#!/usr/bin/env bash
# Deploy loadme to an Azure subscription: resource providers, infrastructure, secrets, template spec version,
# container image and the function app. Re-runnable: a second run changes nothing an operator set (operator
# settings live in the parameters file; settings added in the portal are merged, not replaced).
#
#   infra/deploy.sh -l <location> [-p <prefix>] [-m <management rg>] [-r <runs rg>] [-t <image tag>]
#                   [-v <spec version>] [-f <parameters file>] [-i]
#
# Needs: az (logged in: az login; az account set -s <subscription>), zip, openssl, python3, curl, timeout.
# No secret is ever printed, put on a command line or kept in a shell variable: RESULT_KEY goes from openssl to a
# file only this user can read, from the file to Key Vault (az keyvault secret set --file), and the file is removed;
# the function key of the Entra ID check goes from az to a 0600 file that curl reads its header from (-H @file).
set -euo pipefail

usage() {
  cat >&2 <<'USAGE'
usage: infra/deploy.sh -l LOCATION [-p PREFIX] [-m MANAGEMENT_RG] [-r RUNS_RG] [-t IMAGE_TAG] [-v SPEC_VERSION]
                       [-f PARAMETERS_FILE] [-i]

  -l  Azure region, e.g. westeurope (required)
  -p  name prefix, 3-10 lowercase letters/digits, first a letter (default: loadme)
  -m  management resource group (default: loadme-mgmt)
  -r  resource group for container groups (default: loadme-runs)
  -t  container image tag (default: the current git commit; with -i, the tag the app runs now)
  -v  template spec version (default: 1.0)
  -f  the operator's parameters file (default: infra/main.parameters.json)
  -i  infrastructure, settings and secrets only: no image or code deployment; the template spec version -v
      must be published already (refused otherwise)

RESULT_KEY is generated once, straight into Key Vault, and kept there; this script never reads it back.
USAGE
  exit 2
}

location="" prefix="loadme" mgmt_rg="loadme-mgmt" runs_rg="loadme-runs" tag="" spec_version="1.0"
params_file="infra/main.parameters.json" infra_only=false
while getopts "l:p:m:r:t:v:f:ih" opt; do
  case "$opt" in
    l) location="$OPTARG" ;;
    p) prefix="$OPTARG" ;;
    m) mgmt_rg="$OPTARG" ;;
    r) runs_rg="$OPTARG" ;;
    t) tag="$OPTARG" ;;
    v) spec_version="$OPTARG" ;;
    f) params_file="$OPTARG" ;;
    i) infra_only=true ;;
    *) usage ;;
  esac
done
[ -n "$location" ] || { echo "deploy: -l LOCATION is required" >&2; usage; }
[[ "$prefix" =~ ^[a-z][a-z0-9]{2,9}$ ]] || {
  echo "deploy: -p must be 3-10 lowercase letters or digits, starting with a letter" >&2; exit 2; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
[ -f "$params_file" ] || { echo "deploy: parameters file $params_file not found" >&2; exit 2; }

for tool in az zip openssl python3 curl timeout; do
  command -v "$tool" >/dev/null 2>&1 || { echo "deploy: '$tool' is not installed" >&2; exit 1; }
done

# secretImages binds a secret variable to images (SECRET_VARIABLES' bound form). ARM passes whatever it is given
# and would silently ignore a key it cannot match, leaving that secret unbound: checked before anything is created.
# Keys must match exactly: ARM's contains() on an object ignores case, the app's variable names do not.
secret_images_problems="$(python3 - "$params_file" <<'PY'
import json, sys
try:
    parameters = json.load(open(sys.argv[1]))["parameters"]
    variables = parameters.get("secretVariables", {}).get("value", {})
    images = parameters.get("secretImages", {}).get("value", {})
except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
    print(f"cannot read the parameters of {sys.argv[1]}: {exc!r}")
    sys.exit()
variables = variables if isinstance(variables, dict) else {}
if not isinstance(images, dict):
    print("secretImages must be an object: secret variable -> array of images")
    sys.exit()
for name, entries in images.items():
    if name not in variables:
        near = [v for v in variables if v.lower() == name.lower()]
        hint = f" (names are case-sensitive: did you mean {near[0]}?)" if near else ""
        print(f"secretImages: {name} is not a key of secretVariables{hint}")
    if not isinstance(entries, list) or not entries or not all(isinstance(e, str) and e.strip() for e in entries):
        print(f"secretImages: {name} must be a non-empty array of image strings (entries as in allowedImages)")
PY
)"
if [ -n "$secret_images_problems" ]; then
  while IFS= read -r problem; do echo "deploy: $problem" >&2; done <<<"$secret_images_problems"
  echo "deploy: fix secretImages in $params_file (infra/README.md, 'Secret variables'); nothing was deployed" >&2
  exit 2
fi

if ! subscription="$(az account show --query id -o tsv 2>/dev/null)"; then
  echo "deploy: not logged in to Azure: run 'az login' (and 'az account set -s <subscription>')" >&2
  exit 1
fi

RESULT_KEY_SECRET="result-key"
work="$(mktemp -d)"  # 0700: the result key file, the function key and the app package live here for the run
deployer_assignment=""
# The deployer's Key Vault Secrets Officer assignment (the template creates it on every run) is removed as soon
# as the secrets are written, and on any exit before that: no standing write access to the vault.
drop_vault_role() {
  [ -n "$deployer_assignment" ] || return 0
  if az role assignment delete --ids "$deployer_assignment" --output none; then
    echo "deploy: removed your Key Vault Secrets Officer assignment (the next run grants it again)"
  else
    echo "deploy: could not remove your Key Vault Secrets Officer assignment: az role assignment delete --ids $deployer_assignment" >&2
  fi
  deployer_assignment=""
}
trap 'drop_vault_role; rm -rf "$work"' EXIT

# --- the resource providers everything below needs (registering is idempotent; skipped when already done) ---
for namespace in Microsoft.Web Microsoft.Storage Microsoft.KeyVault Microsoft.OperationalInsights \
    Microsoft.Insights Microsoft.ContainerInstance Microsoft.ContainerRegistry Microsoft.ManagedIdentity; do
  state="$(az provider show --namespace "$namespace" --query registrationState -o tsv 2>/dev/null || true)"
  if [ "$state" != "Registered" ]; then
    echo "deploy: registering resource provider $namespace"
    az provider register --namespace "$namespace" --wait --output none
  fi
done

# --- what exists already ---
app_exists=false existing_app="" names_before=""
existing_app="$(az resource list -g "$mgmt_rg" --resource-type Microsoft.Web/sites \
  --query "[?starts_with(name, '${prefix}-func-')].name | [0]" -o tsv 2>/dev/null || true)"
if [ -n "$existing_app" ]; then
  app_exists=true
  farm="$(az functionapp show -g "$mgmt_rg" -n "$existing_app" --query serverFarmId -o tsv)"
  tier="$(az resource show --ids "$farm" --query sku.tier -o tsv)"
  if [ "$tier" != "FlexConsumption" ]; then
    cat >&2 <<EOF
deploy: $existing_app runs on the '$tier' plan. infra/main.json creates a Flex Consumption app of the same name
        and Azure cannot move an app between these plans. Delete the old app first (queues, journal and logs stay
        in the storage account), or deploy beside it with another -p prefix:
          az functionapp delete -g $mgmt_rg -n $existing_app
        See infra/README.md, "Moving from Linux Consumption".
EOF
    exit 1
  fi
  # Setting names only (never values): after the deployment, none of them may be missing.
  names_before="$(az functionapp config appsettings list -g "$mgmt_rg" -n "$existing_app" --query "[].name" -o tsv | sort)"
  if [ -z "$tag" ] && [ "$infra_only" = true ]; then
    current_image="$(az functionapp config appsettings list -g "$mgmt_rg" -n "$existing_app" \
      --query "[?name=='DEFAULT_IMAGE'].value | [0]" -o tsv)"
    tag="${current_image##*:}"
  fi
fi
tag="${tag:-$(git rev-parse --short HEAD 2>/dev/null || date +%Y%m%d%H%M%S)}"

vault_mode=default
region="$(printf '%s' "$location" | tr -d ' ' | tr '[:upper:]' '[:lower:]')"
active_vault="$(az keyvault list -g "$mgmt_rg" --query "[?starts_with(name, '${prefix}-kv-')].name | [0]" -o tsv 2>/dev/null || true)"
if [ -z "$active_vault" ]; then
  deleted_vault="$(az keyvault list-deleted --resource-type vault \
    --query "[?starts_with(name, '${prefix}-kv-') && properties.location=='${region}'].name | [0]" -o tsv 2>/dev/null || true)"
  if [ -n "$deleted_vault" ]; then
    echo "deploy: Key Vault $deleted_vault is soft-deleted (purge protection keeps it 90 days): recovering it"
    vault_mode=recover
  fi
fi

# Whoever runs this script gets Key Vault Secrets Officer on the vault (the template assigns it) to write secrets.
deployer_id="" deployer_type="User"
if [ "$(az account show --query user.type -o tsv)" = "servicePrincipal" ]; then
  deployer_type="ServicePrincipal"
  deployer_id="$(az ad sp show --id "$(az account show --query user.name -o tsv)" --query id -o tsv 2>/dev/null || true)"
else
  deployer_id="$(az ad signed-in-user show --query id -o tsv 2>/dev/null || true)"
fi
[ -n "$deployer_id" ] || echo "deploy: could not read your object id: give yourself Key Vault Secrets Officer on the vault" >&2

echo "deploy: subscription $subscription, region $location, groups $mgmt_rg / $runs_rg, image tag $tag"
# The app deploys TEMPLATE_SPEC_VERSION_ID as soon as step 2 sets it: the version must exist before that.
spec_name="${prefix}-aci"  # the template's templateSpecName (tests/test_deploy_script.py checks they agree)
if [ "$infra_only" = true ]; then
  if ! az ts show --resource-group "$mgmt_rg" --name "$spec_name" --version "$spec_version" \
      --query id -o tsv >/dev/null 2>&1; then
    echo "deploy: template spec $spec_name version $spec_version is not published: -i would point the app at a" \
      "version that does not exist. Run without -i to publish it, or pass the -v the app runs" >&2
    exit 2
  fi
  echo "deploy: 1/6 template spec $spec_name version $spec_version is published (-i: not changed)"
else
  echo "deploy: 1/6 template spec $spec_name version $spec_version (templates/aci.json)"
  az group create --name "$mgmt_rg" --location "$location" --output none
  az ts create --resource-group "$mgmt_rg" --name "$spec_name" --version "$spec_version" \
    --location "$location" --template-file templates/aci.json --yes --only-show-errors >/dev/null
fi

# ARM keeps one location per deployment name (InvalidDeploymentLocation): the name carries the region.
echo "deploy: 2/6 infrastructure (infra/main.json, operator settings from $params_file)"
outputs="$(az deployment sub create --name "${prefix}-infra-${region}" --location "$location" \
  --template-file infra/main.json --parameters "@$params_file" \
  --parameters prefix="$prefix" managementResourceGroup="$mgmt_rg" deploymentResourceGroup="$runs_rg" \
               imageTag="$tag" templateSpecVersion="$spec_version" appExists="$app_exists" \
               keyVaultCreateMode="$vault_mode" deployerPrincipalId="$deployer_id" deployerPrincipalType="$deployer_type" \
  --query properties.outputs -o json)"
output() { printf '%s' "$outputs" | python3 -c "import json, sys; print(json.load(sys.stdin)['$1']['value'])"; }
function_name="$(output functionName)"
registry="$(output registryName)"
vault="$(output keyVaultName)"
host="$(output defaultHostName)"
deployer_assignment="$(output deployerAssignmentId)"
if [ "$(output templateSpecName)" != "$spec_name" ]; then
  echo "deploy: the template names the template spec $(output templateSpecName), not $spec_name" >&2
  exit 1
fi

echo "deploy: 3/6 secrets in Key Vault $vault"
tries=0
until secret_names="$(az keyvault secret list --vault-name "$vault" --query "[].name" -o tsv)"; do
  tries=$((tries + 1))
  if [ "$tries" -ge 20 ]; then
    echo "deploy: cannot list the secrets of $vault: you need Key Vault Secrets Officer on it" >&2
    exit 1
  fi
  echo "deploy: waiting for the Key Vault role assignment to take effect ($tries/20)"
  sleep 15
done
if grep -qx "$RESULT_KEY_SECRET" <<<"$secret_names"; then
  echo "deploy: RESULT_KEY is in the vault: kept (changing it would reject the results of runs in flight)"
elif az keyvault secret list-deleted --vault-name "$vault" --query "[].name" -o tsv | grep -qx "$RESULT_KEY_SECRET"; then
  echo "deploy: RESULT_KEY was deleted: recovering it"
  az keyvault secret recover --vault-name "$vault" --name "$RESULT_KEY_SECRET" --output none
else
  echo "deploy: generating RESULT_KEY into the vault"
  (umask 077 && openssl rand -hex 32 | tr -d '\n' >"$work/result-key")
  az keyvault secret set --vault-name "$vault" --name "$RESULT_KEY_SECRET" \
    --file "$work/result-key" --encoding utf-8 --output none
  rm -f "$work/result-key"
fi
missing="$(python3 - "$params_file" "$secret_names" <<'PY'
import json, sys
wanted = json.load(open(sys.argv[1]))["parameters"].get("secretVariables", {}).get("value", {})
have = set(sys.argv[2].split())
print(" ".join(sorted(set(wanted.values()) - have)))
PY
)"
if [ -n "$missing" ]; then
  echo "deploy: secretVariables names secrets that are not in $vault: $missing" >&2
  echo "deploy: add each one (infra/README.md, 'Secret variables'), then run this script again" >&2
  exit 1
fi
drop_vault_role

if [ "$infra_only" = false ]; then
  echo "deploy: 4/6 container image $registry/loadme-runner:$tag"
  az acr build --registry "$registry" --image "loadme-runner:$tag" --image "loadme-runner:latest" \
    --file container/Dockerfile . --only-show-errors >/dev/null

  echo "deploy: 5/6 function app $function_name (Flex Consumption: the package goes to its deployment container)"
  package="$work/app.zip"
  git ls-files -z | python3 -c '
import fnmatch, sys
patterns = [p.strip() for p in open(".funcignore") if p.strip() and not p.startswith("#")]
for name in sys.stdin.read().split("\0"):
    if name and not any(fnmatch.fnmatch(name, p) or name.startswith(p.rstrip("/") + "/") for p in patterns):
        print(name)' | zip -q "$package" -@
  # A fresh role assignment of the app identity on its storage makes the publish endpoint answer 400
  # (BlobUploadFailedException wrapping a storage 403) until it takes effect (endjin ZeroFailed.Deploy.Azure
  # 1.8.4, Publish-FlexConsumptionFunctionApp.ps1): retried with back-off. az's Flex path can poll the host
  # status for ever (Azure/azure-cli appservice/custom.py, check_flex_app_after_deployment): under timeout.
  upload_timeout="${LOADME_UPLOAD_TIMEOUT_SECONDS:-1200}" backoff="${LOADME_RETRY_BACKOFF_SECONDS:-30}"
  attempt=1
  while :; do
    rc=0
    timeout "$upload_timeout" az functionapp deployment source config-zip --resource-group "$mgmt_rg" \
      --name "$function_name" --src "$package" --build-remote true --only-show-errors >/dev/null \
      2>"$work/upload.err" || rc=$?
    [ "$rc" -ne 0 ] || break
    if [ "$rc" -eq 124 ]; then
      echo "deploy: the code upload did not finish within ${upload_timeout}s: check the app's deployment" \
        "status in the portal (Deployment Center) and its host status, then run this script again" >&2
      exit 1
    fi
    if [ "$attempt" -lt 5 ] && grep -Eq '(^|[^0-9])(400|403)([^0-9]|$)' "$work/upload.err"; then
      echo "deploy: the upload was refused with HTTP 400/403 (the app's new storage role may not be active" \
        "yet): retrying in $((backoff * attempt))s ($attempt/4)"
      sleep "$((backoff * attempt))"
      attempt=$((attempt + 1))
      continue
    fi
    cat "$work/upload.err" >&2
    echo "deploy: the code upload failed" >&2
    exit 1
  done
else
  echo "deploy: 4-5/6 skipped (-i): image and code stay as they are"
fi

echo "deploy: 6/6 Key Vault references and checks"
app_id="$(az functionapp show -g "$mgmt_rg" -n "$function_name" --query id -o tsv)"
# App Service caches resolved references for up to 24 hours; this makes it read them again now.
az rest --method post --url "${app_id}/config/configreferences/appsettings/refresh?api-version=2022-03-01" \
  --output none || echo "deploy: could not ask App Service to re-read Key Vault references" >&2
unresolved=""
for attempt in 1 2 3 4 5 6 7 8; do
  if ! unresolved="$(az rest --method get --url "${app_id}/config/configreferences/appsettings?api-version=2022-03-01" \
      --query "value[?properties.status!='Resolved'].[name, properties.status]" -o tsv)"; then
    echo "deploy: could not read the status of the Key Vault references: check them in the portal" >&2
    unresolved=""
    break
  fi
  [ -n "$unresolved" ] || break
  [ "$attempt" -eq 8 ] || sleep 15
done
if [ -n "$unresolved" ]; then
  echo "deploy: these Key Vault references do not resolve (setting, status):" >&2
  printf '%s\n' "$unresolved" >&2
  exit 1
fi

if [ -n "$names_before" ]; then
  names_after="$(az functionapp config appsettings list -g "$mgmt_rg" -n "$function_name" --query "[].name" -o tsv | sort)"
  lost="$(comm -23 <(printf '%s\n' "$names_before") <(printf '%s\n' "$names_after"))"
  if [ -n "$lost" ]; then
    echo "deploy: these app settings were there before this run and are gone: $(printf '%s ' "$lost")" >&2
    exit 1
  fi
fi

if [ "$(output entraAuthEnabled)" = "True" ]; then
  # Without "assignment required" every account and service principal of the tenant can get a token for the API.
  entra_client_id="$(output entraClientId)"
  if ! az ad sp update --id "$entra_client_id" --set appRoleAssignmentRequired=true --output none; then
    echo "deploy: could not set 'assignment required' on the service principal of $entra_client_id: every" \
      "principal of the tenant could call the API. Owner of the app registration or Application Administrator" \
      "can: az ad sp update --id $entra_client_id --set appRoleAssignmentRequired=true" >&2
    exit 1
  fi
  # Every route is http_auth_level=FUNCTION: a request without a key gets 401 from the Functions host whatever
  # App Service authentication does. With a valid key and no token, only authentication can answer 401.
  (umask 077 && az functionapp keys list -g "$mgmt_rg" -n "$function_name" --query functionKeys.default -o tsv \
    | tr -d '\r\n' >"$work/function-key")
  if [ ! -s "$work/function-key" ]; then
    echo "deploy: could not read the app's default function key to check Entra ID authentication" >&2
    exit 1
  fi
  (umask 077 && { printf 'x-functions-key: '; cat "$work/function-key"; printf '\n'; } >"$work/key-header")
  rm -f "$work/function-key"
  status="$(curl -s -o /dev/null -w '%{http_code}' -H "@$work/key-header" "https://$host/api/status" || true)"
  rm -f "$work/key-header"
  case "$status" in
    401) echo "deploy: Entra ID authentication is on: a request with a function key but no token gets 401" ;;
    200)
      echo "deploy: Entra ID authentication is on, but a request with a function key and no token got HTTP 200:" \
        "App Service authentication is not enforced" >&2
      exit 1 ;;
    *)
      echo "deploy: Entra ID authentication is on, but a request with a function key and no token got HTTP" \
        "$status, not 401" >&2
      exit 1 ;;
  esac
fi

echo "deploy: done. API: https://$host/api"
echo "deploy: function keys: az functionapp keys list -g $mgmt_rg -n $function_name"
