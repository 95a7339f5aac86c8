#!/usr/bin/env bash
# The demo, as the README gives it: prepare a demo jail, show what jailshim did, undo it.
# (The full DNS-over-TLS demo with haproxy and unbound replaces this once it lands.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
JS=.venv/bin/jailshim
jail=$(mktemp -d /tmp/jailshim-demo.XXXXXX)
chmod 0755 "$jail"
trap '$JS teardown --chroot "$jail" --log-format console; rm -rf "$jail"' EXIT

echo "== plan for an empty jail at $jail"
$JS prepare --chroot "$jail" --dry-run --log-level warning
echo "== prepare"
$JS prepare --chroot "$jail" --log-format console
ls -l "$jail/dev"
echo "== reading dev/urandom from inside the jail as nobody"
.venv/bin/python - "$jail" <<'PY'
import os, sys
os.chroot(sys.argv[1]); os.chdir("/"); os.setgroups([]); os.setgid(65534); os.setuid(65534)
with open("/dev/urandom", "rb") as f:
    print("16 bytes:", f.read(16).hex())
PY
echo "== teardown"
