#!/usr/bin/env bash
# THE test command: install what is needed, build everything, run the whole
# suite (unit tests, every integration test binary, doctests).
#
#   bash scripts/test.sh [extra cargo test arguments]
#
# --no-fail-fast: one failing test binary does not hide the others' results.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/setup.sh
if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

cargo build --all-targets
exec cargo test --no-fail-fast "$@"
