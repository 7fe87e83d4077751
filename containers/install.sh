#!/bin/sh
# Installs glamhpc with the project's pinned dependency set into the image's Python. The
# Dockerfile and containers/glamhpc.def both run this script, so both recipes install exactly
# the same set (tests/containers/test_consistency.py checks they call it the same way).
#
#   install.sh deps SRC      runtime dependencies from SRC/pyproject.toml, pinned by
#                            SRC/constraints.txt (a layer of its own: cached across code edits)
#   install.sh project SRC   glamhpc itself without touching the dependencies, then a smoke test
#
# torch: a CUDA base image ships the torch build that matches its CUDA and cuDNN. Reinstalling
# it from PyPI would download another multi-GB build (and maybe another CUDA), so when the base
# has torch the constraint is rewritten to the base's exact version (local tag such as +cu128
# included) and pip leaves it in place. A base without torch gets the project's pin, named in
# the same pip command as everything that depends on it so that pip cannot pick a newer torch.
set -eu

usage="usage: install.sh deps|project SRC"
mode=${1:?$usage}
src=${2:?$usage}
python=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pip_install() {
    "$python" -m pip install --no-cache-dir --disable-pip-version-check "$@"
}

torch_version() {
    "$python" -c 'import torch; print(torch.__version__)' 2>/dev/null
}

case $mode in
deps)
    pinned=$(sed -n 's/^torch==//p' "$src/constraints.txt")
    "$python" - "$src/pyproject.toml" >"$work/requirements.txt" <<'PY'
import sys

try:
    import tomllib
except ImportError:  # Python 3.10 bases
    sys.exit("install.sh: the image's Python needs tomllib (Python >= 3.11)")
with open(sys.argv[1], "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["dependencies"]))
PY
    grep -v '^torch==' "$src/constraints.txt" >"$work/constraints.txt"
    if base_torch=$(torch_version); then
        case $base_torch in
        "$pinned" | "$pinned"+*) ;;
        *) echo "install.sh: warning: the base image has torch $base_torch," \
            "the project pins $pinned; keeping the base's build" >&2 ;;
        esac
        echo "torch==$base_torch" >>"$work/constraints.txt"
        pip_install -c "$work/constraints.txt" -r "$work/requirements.txt"
        after=$(torch_version)
        if [ "$after" != "$base_torch" ]; then
            echo "install.sh: pip replaced the base image's torch ($base_torch -> $after)" >&2
            exit 1
        fi
    else
        echo "torch==$pinned" >>"$work/constraints.txt"
        pip_install -c "$work/constraints.txt" -r "$work/requirements.txt" "torch==$pinned"
    fi
    ;;
project)
    pip_install --no-deps "$src"
    "$python" -m glamhpc --version
    ;;
*)
    echo "$usage" >&2
    exit 2
    ;;
esac
