#!/usr/bin/env bash
# The demo, offline: sign a page from a bundled local HTTPS server, stop the
# server, verify the transcript with nothing to connect to.
#
#   bash scripts/demo.sh
#
# Installs what it needs (scripts/setup.sh), builds the release binary, makes
# a throwaway CA and server certificate, serves fixtures/demo/ with nginx on
# 127.0.0.1, and leaves the transcript and CA in target/demo/ to re-check.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$(pwd)

bash scripts/setup.sh
if ! command -v cargo >/dev/null && [[ -f $HOME/.cargo/env ]]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

say() { printf 'demo: %s\n' "$*"; }

say "building the release binary (the first build takes a few minutes)"
cargo build --release --quiet
target_dir=${CARGO_TARGET_DIR:-$repo/target}
bin=$target_dir/release/tlsign-seccomp

work=$(mktemp -d /tmp/tlsign-demo.XXXXXX)
nginx_pid=
stop_server() {
    if [[ -n $nginx_pid ]]; then
        kill -TERM "$nginx_pid" 2>/dev/null || true
        wait "$nginx_pid" 2>/dev/null || true
        nginx_pid=
    fi
}
cleanup() {
    stop_server
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- A CA and a server certificate for tlsign.test ----------------------
cd "$work"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -subj "/CN=tlsign demo CA" -days 30 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out ca.pem
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out server.key 2>/dev/null
openssl req -new -key server.key -subj "/CN=tlsign.test" -out server.csr
printf '%s\n' \
    "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=DNS:tlsign.test,DNS:localhost,IP:127.0.0.1" >server.ext
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
    -days 30 -extfile server.ext -out server.pem 2>/dev/null

# --- nginx on a free port on 127.0.0.1, serving fixtures/demo/ ----------
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
mkdir -p tmp
for attempt in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 40000))
    port_taken "$port" && continue
    sed -e "s|@PREFIX@|$work|g" -e "s|@ROOT@|$repo/fixtures/demo|g" \
        -e "s|@PORT@|$port|g" -e "s|@CERT@|$work/server.pem|g" \
        -e "s|@KEY@|$work/server.key|g" \
        "$repo/fixtures/nginx.conf.template" >nginx.conf
    /usr/sbin/nginx -e "$work/error.log" -p "$work" -c "$work/nginx.conf" \
        -g 'daemon off;' 2>>"$work/error.log" &
    nginx_pid=$!
    for _ in $(seq 50); do
        port_taken "$port" && break
        kill -0 "$nginx_pid" 2>/dev/null || break
        sleep 0.1
    done
    port_taken "$port" && break
    stop_server
done
if [[ -z $nginx_pid ]]; then
    echo "demo: nginx did not start:" >&2
    cat "$work/error.log" >&2 2>/dev/null || true
    exit 1
fi
url="https://tlsign.test:$port/"
say "serving fixtures/demo/ at $url (nginx on 127.0.0.1:$port)"

# --- Sign, stop the server, verify ----------------------------------------
say "signing: tlsign-seccomp sign $url --resolve tlsign.test:$port:127.0.0.1 --ca-file ca.pem -o demo.tlsign"
"$bin" sign "$url" --resolve "tlsign.test:$port:127.0.0.1" --ca-file ca.pem -o demo.tlsign
stop_server
if [[ ! -s demo.tlsign ]]; then
    echo "demo: sign exited 0 but wrote no transcript" >&2
    exit 1
fi
say "server stopped; transcript is $(stat -c %s demo.tlsign) bytes"

say "verifying offline: tlsign-seccomp verify demo.tlsign --ca-file ca.pem --body -"
"$bin" verify demo.tlsign --ca-file ca.pem --body - >body.html
if ! cmp -s body.html "$repo/fixtures/demo/index.html"; then
    echo "demo: the verified body differs from fixtures/demo/index.html" >&2
    exit 1
fi
echo "----- verified body -----"
cat body.html
echo "-------------------------"

mkdir -p "$target_dir/demo"
cp demo.tlsign ca.pem "$target_dir/demo/"
say "verified: the body above is byte for byte the page the server sent."
say "re-check any time: $bin verify $target_dir/demo/demo.tlsign --ca-file $target_dir/demo/ca.pem --body -"
