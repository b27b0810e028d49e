#!/usr/bin/env bash
# Installs what the dashboard's browser test (tests/api/dashboard.rs) needs, when it is missing:
# Debian's Chromium at /usr/bin/chromium, and tests/ui's playwright-core at the version package.json
# pins (npm ci, from the committed lock file). Called by .ci/run; does nothing when both are there.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ ! -x /usr/bin/chromium ]]; then
    echo "installing: chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # Wait for another apt run instead of failing on its lock.
    apt-get install -y -qq -o DPkg::Lock::Timeout=300 chromium
fi

command -v npm >/dev/null || { echo "npm is missing: install Node.js 20+ with npm" >&2; exit 1; }
wanted="$(node -p "require('./tests/ui/package.json').devDependencies['playwright-core']")"
installed="$(node -p "require('./tests/ui/node_modules/playwright-core/package.json').version" 2>/dev/null || true)"
if [[ "$installed" != "$wanted" ]]; then
    echo "installing: tests/ui (playwright-core $wanted, npm ci)"
    npm ci --prefix tests/ui --no-audit --no-fund
fi
