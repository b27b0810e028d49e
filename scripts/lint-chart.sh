#!/usr/bin/env bash
# Lint charts/rollout-controller with the real Helm engine and check what it renders.
#
#   scripts/lint-chart.sh                      # every case; exits 1 when any fails
#   scripts/lint-chart.sh --render my.yaml     # print the manifests rendered with my.yaml (like helm template)
#
# Needs python3 (with venv) and access to PyPI the first time: it installs helm-sdkpy (Helm's Go
# library, bundled) and PyYAML into a venv under ${XDG_CACHE_HOME:-~/.cache}, reused afterwards.
# Override the venv location with ROLLOUT_HELM_VENV and the interpreter with PYTHON.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
python="${PYTHON:-python3}"
venv="${ROLLOUT_HELM_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/rollout-helm-venv}"
# Pinned: the harness relies on how this helm-sdkpy's lint reports (see scripts/lint_chart.py).
requirements=("helm-sdkpy==0.1.32" "PyYAML>=6,<7")
stamp="$venv/.rollout-requirements"
wanted="${requirements[*]}"

install_venv() {
    echo "setting up $venv (${wanted})" >&2
    rm -rf "$venv"
    mkdir -p "$(dirname "$venv")"
    "$python" -m venv "$venv"
    # helm-sdkpy declares Python >= 3.12 but works on 3.11, the Debian 12 default.
    timeout 300 "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        --timeout 60 --retries 3 --ignore-requires-python "${requirements[@]}"
    "$venv/bin/python" -c 'import helm_sdkpy, yaml' >/dev/null
    printf '%s\n' "$wanted" >"$stamp"
}

mkdir -p "$(dirname "$venv")"
# One installer at a time when several runs start together.
exec 9>"$venv.lock"
if command -v flock >/dev/null 2>&1; then
    timeout 360 flock 9
fi
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$wanted" ]] \
    || ! "$venv/bin/python" -c 'import helm_sdkpy, yaml' >/dev/null 2>&1; then
    install_venv
fi
exec 9>&-

exec timeout 300 "$venv/bin/python" "$here/lint_chart.py" "$@" "$repo/charts/rollout-controller"
