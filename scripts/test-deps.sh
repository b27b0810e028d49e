#!/usr/bin/env bash
# Installs what the test suite's real peers need, when missing: redis-server and redis-cli, Prometheus and
# Alertmanager (Debian), Chromium + playwright-core (dashboard test), the OpenFeature Python and
# Node SDKs (OFREP tests), the Node SDK's compiler (sdk/node: typescript and @types/node, pinned by its
# package-lock.json; tests/api/sdk_node.rs builds dist/ with it). Idempotent: does nothing when everything is there.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
cd "$(dirname "$0")/.."

apt_packages=()
command -v redis-server >/dev/null || apt_packages+=(redis-server)
# The Redis Cluster tests: redis-cli --cluster create joins three redis-servers.
command -v redis-cli >/dev/null || apt_packages+=(redis-tools)
# The fault tests: kill(1) signals the service binary; openssl(1) makes the rediss:// test's certificates.
[[ -x /usr/bin/kill || -x /bin/kill ]] || apt_packages+=(procps)
command -v openssl >/dev/null || apt_packages+=(openssl)
[[ -x /usr/bin/prometheus ]] || apt_packages+=(prometheus)
[[ -x /usr/bin/prometheus-alertmanager ]] || apt_packages+=(prometheus-alertmanager)
if ((${#apt_packages[@]})); then
    echo "installing: ${apt_packages[*]}"
    apt-get update -qq
    apt-get install -y -qq -o DPkg::Lock::Timeout=300 "${apt_packages[@]}"
fi

bash scripts/ci-ui-deps.sh
[[ -x tests/ofrep/.venv/bin/python ]] || python3 -m venv tests/ofrep/.venv
tests/ofrep/.venv/bin/pip install -q -r tests/ofrep/requirements.txt
[[ -d tests/ofrep/node_modules/@openfeature/ofrep-provider ]] || npm ci --prefix tests/ofrep --no-audit --no-fund
[[ -d sdk/node/node_modules/typescript ]] || npm ci --prefix sdk/node --no-audit --no-fund
