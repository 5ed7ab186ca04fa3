#!/usr/bin/env bash
# Install what building, the demo and the tests need on Debian 12, once.
#
# Idempotent: installs only the packages that are missing (apt-get runs only
# then), as root or through sudo. Quiet when there is nothing to do.
#
#   libseccomp-dev pkg-config  the libseccomp crate links the system library
#   gcc libc6-dev              C code in dependencies (ring, zstd) and the
#                              tests' small C programs
#   nginx openssl              the demo's and the tests' HTTPS servers and PKI
#   curl                       the tests' fixture self-test (test-only)
#   strace                     fault injection: kernel fallbacks (test-only)
#   util-linux                 unshare and setpriv for the tests
#   parallel                   GNU parallel: the sharding example of
#                              docs/batch.md, run by tests/batch_shard.rs
set -euo pipefail

packages=(libseccomp-dev pkg-config gcc libc6-dev nginx openssl curl strace util-linux ca-certificates parallel)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

if ((${#missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        as_root=()
    elif command -v sudo >/dev/null; then
        as_root=(sudo)
    else
        echo "setup: need root or sudo to install: ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}" >&2

    # Installing nginx would start the system's nginx on port 80 (and fail
    # the install if that port is taken). Nothing here needs it: tell
    # invoke-rc.d not to start services during this install, unless a
    # policy is already in place.
    policy=/usr/sbin/policy-rc.d
    added_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee "$policy" >/dev/null
        "${as_root[@]}" chmod 755 "$policy"
        added_policy=1
    fi
    cleanup() { [[ -z $added_policy ]] || "${as_root[@]}" rm -f "$policy"; }
    trap cleanup EXIT

    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Rust: these machines have it; say clearly what to do where they don't.
if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found. Install Rust 1.80 or newer (https://rustup.rs)," >&2
    echo "setup: e.g. curl -sSf https://sh.rustup.rs | sh -s -- -y; then open a new shell." >&2
    exit 1
fi
