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

# The Debian 13 root tests/cross_host.rs crosses glibc versions with: made
# once (minutes), then reused; when it cannot be made, one warning line and
# that test skips.
export TLSIGN_CROSS_ROOT=${TLSIGN_CROSS_ROOT:-/var/cache/tlsign-seccomp/trixie-root}
bash scripts/cross-root.sh

cargo build --all-targets
# The public API is documented (deny(missing_docs)); its docs must build
# without broken links.
RUSTDOCFLAGS="-D warnings" cargo doc --no-deps --quiet
# The benchmarks' smoke modes (3 rounds): keep benches/ from rotting. The
# figures of a real run are in docs/benchmarks.md.
cargo bench --bench backends -- --quick
cargo bench --bench batch -- --quick
exec cargo test --no-fail-fast "$@"
