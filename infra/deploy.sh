#!/usr/bin/env bash
# Deploy loadme to an Azure subscription: infrastructure, template spec version, container image
# and the function app. Idempotent: running it again updates everything in place.
#
#   infra/deploy.sh -l <location> [-p <prefix>] [-m <management rg>] [-r <runs rg>] [-t <image tag>]
#
# Needs: az (logged in: az login; az account set -s <subscription>), zip, openssl.
set -euo pipefail

usage() {
  cat >&2 <<'USAGE'
usage: infra/deploy.sh -l LOCATION [-p PREFIX] [-m MANAGEMENT_RG] [-r RUNS_RG] [-t IMAGE_TAG] [-v SPEC_VERSION]

  -l  Azure region, e.g. westeurope (required)
  -p  name prefix, 3-10 lowercase letters/digits (default: loadme)
  -m  management resource group (default: loadme-mgmt)
  -r  resource group for container groups (default: loadme-runs)
  -t  container image tag (default: the current git commit)
  -v  template spec version (default: 1.0)

RESULT_KEY: taken from the environment if set, else kept from the app's current settings, else generated.
USAGE
  exit 2
}

location="" prefix="loadme" mgmt_rg="loadme-mgmt" runs_rg="loadme-runs" tag="" spec_version="1.0"
while getopts "l:p:m:r:t:v:h" opt; do
  case "$opt" in
    l) location="$OPTARG" ;;
    p) prefix="$OPTARG" ;;
    m) mgmt_rg="$OPTARG" ;;
    r) runs_rg="$OPTARG" ;;
    t) tag="$OPTARG" ;;
    v) spec_version="$OPTARG" ;;
    *) usage ;;
  esac
done
[ -n "$location" ] || { echo "deploy: -l LOCATION is required" >&2; usage; }
[[ "$prefix" =~ ^[a-z0-9]{3,10}$ ]] || { echo "deploy: -p must be 3-10 lowercase letters or digits" >&2; exit 2; }

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
tag="${tag:-$(git rev-parse --short HEAD 2>/dev/null || date +%Y%m%d%H%M%S)}"

for tool in az zip openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "deploy: '$tool' is not installed" >&2; exit 1; }
done
if ! subscription="$(az account show --query id -o tsv 2>/dev/null)"; then
  echo "deploy: not logged in to Azure: run 'az login' (and 'az account set -s <subscription>')" >&2
  exit 1
fi
echo "deploy: subscription $subscription, region $location, groups $mgmt_rg / $runs_rg, image tag $tag"

# Keep the result key stable across runs (changing it would reject results of runs in flight).
if [ -z "${RESULT_KEY:-}" ]; then
  existing_app="$(az functionapp list -g "$mgmt_rg" --query "[?starts_with(name, '${prefix}-func-')].name | [0]" -o tsv 2>/dev/null || true)"
  if [ -n "$existing_app" ]; then
    RESULT_KEY="$(az functionapp config appsettings list -g "$mgmt_rg" -n "$existing_app" \
      --query "[?name=='RESULT_KEY'].value | [0]" -o tsv 2>/dev/null || true)"
  fi
  RESULT_KEY="${RESULT_KEY:-$(openssl rand -hex 32)}"
fi

echo "deploy: 1/4 infrastructure (infra/main.json)"
outputs="$(az deployment sub create --name "${prefix}-infra" --location "$location" \
  --template-file infra/main.json \
  --parameters prefix="$prefix" managementResourceGroup="$mgmt_rg" deploymentResourceGroup="$runs_rg" \
               imageTag="$tag" templateSpecVersion="$spec_version" resultKey="$RESULT_KEY" \
  --query properties.outputs -o json)"
output() { printf '%s' "$outputs" | python3 -c "import json, sys; print(json.load(sys.stdin)['$1']['value'])"; }
function_name="$(output functionName)"
registry="$(output registryName)"
spec_name="$(output templateSpecName)"

echo "deploy: 2/4 template spec $spec_name version $spec_version (templates/aci.json)"
az ts create --resource-group "$mgmt_rg" --name "$spec_name" --version "$spec_version" \
  --location "$location" --template-file templates/aci.json --yes --only-show-errors >/dev/null

echo "deploy: 3/4 container image $registry/loadme-runner:$tag"
az acr build --registry "$registry" --image "loadme-runner:$tag" --image "loadme-runner:latest" \
  --file container/Dockerfile . --only-show-errors >/dev/null

echo "deploy: 4/4 function app $function_name"
package="$(mktemp -d)/app.zip"
git ls-files -z | python3 -c '
import fnmatch, sys
patterns = [p.strip() for p in open(".funcignore") if p.strip() and not p.startswith("#")]
for name in sys.stdin.read().split("\0"):
    if name and not any(fnmatch.fnmatch(name, p) or name.startswith(p.rstrip("/") + "/") for p in patterns):
        print(name)' | zip -q "$package" -@
az functionapp deployment source config-zip --resource-group "$mgmt_rg" --name "$function_name" \
  --src "$package" --build-remote true --only-show-errors >/dev/null
rm -f "$package"

echo "deploy: done. API: https://$(az functionapp show -g "$mgmt_rg" -n "$function_name" --query defaultHostName -o tsv)/api"
echo "deploy: function keys: az functionapp keys list -g $mgmt_rg -n $function_name"
