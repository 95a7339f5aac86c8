#!/usr/bin/env bash
# The demo, as the README gives it: the original scenario, fixed. haproxy terminates
# DNS-over-TLS (TLS 1.3 only) in a chroot jail that jailshim prepares and verifies, in front of
# unbound answering a local demo zone. Runs in the foreground until Ctrl-C, then cleans up.
#
#   bash scripts/demo.sh           # serve on 127.0.0.1:8853 (DEMO_PORT) until Ctrl-C
#   bash scripts/demo.sh --smoke   # start, make one real DoT query with kdig, stop; exit 0/1
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
PORT=${DEMO_PORT:-8853}
DNS_PORT=${DEMO_DNS_PORT:-5300}
NAME=hello.demo.jailshim
JS=$PWD/.venv/bin/jailshim

work=$(mktemp -d /tmp/jailshim-demo.XXXXXX)
chmod 0755 "$work"
mkdir -m 0755 "$work/jail"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  "$JS" teardown --chroot "$work/jail" --log-level warning || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "== a self-signed certificate for the demo"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null
cat "$work/cert.pem" "$work/key.pem" > "$work/dot.pem"

echo "== unbound on 127.0.0.1:$DNS_PORT with the demo zone"
sed "s/5300/$DNS_PORT/g" examples/haproxy-dot/unbound.conf > "$work/unbound.conf"
unbound -d -c "$work/unbound.conf" &
pids+=($!)
for _ in $(seq 50); do
  kdig +short +time=1 +retry=0 @127.0.0.1 -p "$DNS_PORT" "$NAME" A 2>/dev/null | grep -q . && break
  sleep 0.2
done

echo "== haproxy through jailshim (jail $work/jail)"
export JAIL="$work/jail" DOT_BIND="127.0.0.1:$PORT" DOT_CERT="$work/dot.pem" \
  DNS_UPSTREAM="127.0.0.1:$DNS_PORT" LOG_TARGET=stderr
"$JS" run --log-format console -- haproxy -f examples/haproxy-dot/haproxy.cfg -db &
pids+=($!)

query=(kdig +tls +time=2 +retry=0 @127.0.0.1 -p "$PORT" "$NAME" A)
for _ in $(seq 100); do
  "${query[@]}" +short 2>/dev/null | grep -q 192.0.2.53 && break
  sleep 0.2
done
ls -l "$work/jail/dev"
echo
echo "DNS-over-TLS is being served from the jail. Query it with:"
echo "  kdig +tls @127.0.0.1 -p $PORT $NAME A"
echo

if [ "$smoke" = 1 ]; then
  answer=$("${query[@]}" 2>&1 || true)
  echo "$answer"
  if grep -q "(TLS1.3)" <<<"$answer" && grep -Eq "^$NAME\.[[:space:]].*A[[:space:]]+192\.0\.2\.53" <<<"$answer"; then
    echo "smoke: OK (TLS 1.3, $NAME A 192.0.2.53)"
    exit 0
  fi
  echo "smoke: FAILED" >&2
  exit 1
fi
echo "Press Ctrl-C to stop and clean up."
wait "${pids[1]}"
