#!/usr/bin/env bash
# Make the Debian 13 (trixie) root that tests/cross_host.rs runs the binary
# in (a glibc other than the host's), once.
#
#   TLSIGN_CROSS_ROOT=/path bash scripts/cross-root.sh
#   (default: /var/cache/tlsign-seccomp/trixie-root)
#
# Idempotent: when the root is there (it holds the marker file) this prints
# nothing and returns at once. Otherwise it debootstraps a minbase trixie
# (about 3 minutes, 900 s at most) into a temporary directory next to the
# root and renames it into place only when complete, so a half-made root
# never looks done.
#
# Never fails the caller: when the root cannot be made (not root, no
# network, no apt) it prints ONE warning line and exits 0; the test then
# skips and says why.
set -uo pipefail

root=${TLSIGN_CROSS_ROOT:-/var/cache/tlsign-seccomp/trixie-root}
root=${root%/}
marker=.tlsign-cross-root-complete
suite=trixie
mirror=http://deb.debian.org/debian

[[ -f $root/$marker ]] && exit 0

warn() {
    echo "cross-root: warning: $*; tests/cross_host.rs will skip" >&2
    exit 0
}

if [[ -e $root ]]; then
    # Not ours (or made by hand): leave it alone. cross_host.rs uses it if
    # it works.
    echo "cross-root: warning: $root exists but has no $marker (not made by this script); leaving it as is" >&2
    exit 0
fi
[[ $(id -u) -eq 0 ]] || warn "not root: cannot debootstrap $root"
command -v apt-get >/dev/null || warn "no apt-get: cannot install debootstrap"

parent=$(dirname "$root")
name=$(basename "$root")
mkdir -p "$parent" 2>/dev/null || warn "cannot create $parent"
log=$parent/$name.log

# One builder at a time; a second one waits, then finds the root done.
exec 9>"$parent/.$name.lock" || warn "cannot open $parent/.$name.lock"
flock -w 1000 9 || warn "timed out waiting for another cross-root.sh"
[[ -f $root/$marker ]] && exit 0

if ! command -v debootstrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    if ! timeout -k 10 300 apt-get install -y -qq --no-install-recommends debootstrap >"$log" 2>&1; then
        timeout -k 10 300 apt-get update -qq >>"$log" 2>&1
        timeout -k 10 300 apt-get install -y -qq --no-install-recommends debootstrap >>"$log" 2>&1 ||
            warn "cannot install debootstrap (log: $log)"
    fi
fi

tmp=$(mktemp -d "$parent/.$name.tmp.XXXXXX") || warn "cannot create a temporary directory in $parent"
cleanup() {
    # debootstrap mounts /proc and /sys in the target while it works; a
    # killed one can leave them mounted. Unmount (deepest first), then
    # remove without crossing into anything still mounted.
    awk -v t="$tmp/" 'index($5, t) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null; done
    rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT

# libseccomp2: the binary links libseccomp.so.2 (apt depends on it too, but
# say so rather than rely on that).
timeout -k 30 900 debootstrap --variant=minbase --include=libseccomp2 \
    "$suite" "$tmp" "$mirror" >"$log" 2>&1
rc=$?
if ((rc == 124 || rc == 137)); then
    warn "debootstrap $suite timed out after 900 s (log: $log)"
elif ((rc != 0)); then
    warn "debootstrap $suite failed with exit $rc: $(tail -n 1 "$log") (log: $log)"
fi
[[ -x $tmp/usr/bin/ldd && -e $tmp/etc/debian_version ]] ||
    warn "debootstrap $suite exited 0 but the root looks incomplete (log: $log)"

printf 'debian %s, made by scripts/cross-root.sh on %s\n' \
    "$(cat "$tmp/etc/debian_version")" "$(date -u +%FT%TZ)" >"$tmp/$marker"
chmod 755 "$tmp"
mv -T "$tmp" "$root" || warn "cannot rename $tmp to $root"
trap - EXIT
rm -f "$log"
exit 0
