#!/usr/bin/env bash
# Install everything jailshim's demo and tests need on a fresh Debian 12 machine (as root):
# Debian packages first, then a .venv with jailshim and its test tools. Safe to run again;
# it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  python3 python3-venv python3-seccomp   # the interpreter; seccomp filters for getrandom tests
  python3-structlog python3-tenacity python3-pyroute2  # the README's install on Debian's libraries
  util-linux uidmap iproute2 procps      # unshare, ip netns, ps
  strace                                 # kill points: SIGKILL injected at each mutating syscall
  haproxy openssl                        # the daemon jailshim starts first, and certificates
  unbound knot-dnsutils gnutls-bin faketime  # the DNS-over-TLS demo and reseed tests
  nsd stunnel4                           # the nsd and stunnel adapters' real-daemon tests
  bind9 bind9-utils                      # the named adapter's real-daemon tests
  postfix                                # the postfix adapter's real-daemon tests
  lighttpd lighttpd-mod-openssl pdns-recursor radvd ndisc6  # issue 30's adapters: lighttpd, PowerDNS, radvd and their clients
  vsftpd  # issue 30: vsftpd (its client is python's ftplib)
  privoxy ntpsec openvpn pdns-server pdns-backend-bind  # issue 30: the rest of the long tail (ntpsec replaces systemd-timesyncd/chrony: README)
  openssh-server openssh-client curl     # issue 30: sshd's sftp jails and their client; curl for lighttpd and privoxy
  podman buildah runc slirp4netns fuse-overlayfs debootstrap  # the container tests
  catatonit                              # podman kube play: the pods' pause image
  systemd                                # systemd-analyze verify for the example units
  gcc libc6-dev                          # the C test daemons of tests/test_cryptolib.py
  libsodium23                            # the entropy matrix's libsodium cells (no -dev needed)
  tini dumb-init                         # --init's controls: the peers run the same signal tests
  pipx                                   # the README's pipx install, tested (tests/test_pipx.py)
  prometheus prometheus-node-exporter    # doctor --all: promtool checks its textfile, node_exporter serves it
  debhelper dh-python pybuild-plugin-pyproject python3-hatchling python3-all lintian build-essential bash-completion  # the .deb (tests/test_deb.py) and completion test
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing Debian packages: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # postfix asks which mail set-up to make; "Local only" writes a main.cf (the tests copy it)
  # and opens nothing to the network. Asked before installing, so apt does not stop to ask.
  echo "postfix postfix/main_mailer_type select Local only" | debconf-set-selections
  # Debian's daemons (haproxy, unbound, nsd, stunnel, named, postfix) must not start: policy-rc.d.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's own interpreter, not whatever python3 is first on PATH: it is the one a fresh
# machine has, and the one python3-seccomp is built for.
PY=/usr/bin/python3
if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  rm -rf .venv
  "$PY" -m venv .venv
fi
stamp=.venv/.jailshim-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[test]'
  touch "$stamp"
fi

# The .deb of each package whose configuration a test needs as shipped (tests/daemons.py,
# pristine_copy: the host's /etc copy may have been edited). Without network this is skipped
# with a warning; such a test then uses apt's own cache, and fails naming this step only if
# the host's file was edited and no .deb is found.
DEB_CACHE=/var/cache/jailshim-tests/debs
mkdir -p "$DEB_CACHE"
for pkg in bind9 unbound nsd stunnel4 privoxy ntpsec pdns-server; do
  version=$(dpkg-query -W -f='${Version}' "$pkg")
  arch=$(dpkg-query -W -f='${Architecture}' "$pkg")
  deb="$DEB_CACHE/${pkg}_${version//:/%3a}_${arch}.deb"
  if [ ! -f "$deb" ]; then
    cached="/var/cache/apt/archives/$(basename "$deb")"
    if [ -f "$cached" ]; then
      cp "$cached" "$deb"
    elif ! (cd "$DEB_CACHE" && apt-get download -qq "$pkg=$version" 2>/dev/null); then
      echo "bootstrap: could not download $pkg $version (offline?); tests use apt's cache" >&2
    fi
  fi
done

# The PyPI wheels the OpenSSL 1.1.1 tests take their libcrypto from (tests/wheels.py): fetched
# here, once, so no test reaches the package index. Offline this warns; those tests then fail
# under CI=true (skip elsewhere) with a sentence naming this step.
.venv/bin/python -m tests.wheels || echo "bootstrap: some test wheels could not be downloaded (offline?)" >&2
