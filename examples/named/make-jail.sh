#!/bin/sh
# Build a chroot jail for Debian 12's BIND named (bind9 9.18), as Debian's chroot how-to does:
# named's own files go in by hand; jailshim adds only dev/ (null, random, urandom, zero) and the
# /dev/log socket when named logs to syslog. Run as root:  make-jail.sh /var/bind9/chroot
#
# What named needs inside JAIL (every path in named.conf is read inside it, as is -c FILE):
#   etc/bind/         the configuration (a copy of /etc/bind, rndc.key included)
#   usr/share/dns/    root.hints, which Debian's named.conf.default-zones names for zone "."
#   var/cache/bind/   named's `directory` (managed keys, secondary zones): writable by bind
#   run/named/        pid file, session key: writable by bind
# The jail itself stays owned by root and not writable by others (jailshim refuses it otherwise).
set -eu
JAIL=${1:?usage: make-jail.sh JAIL}
install -d -o root -g root -m 0755 "$JAIL" "$JAIL/etc" "$JAIL/usr" "$JAIL/usr/share" "$JAIL/var" \
    "$JAIL/var/cache" "$JAIL/run"
cp -a /etc/bind "$JAIL/etc/"
cp -a /usr/share/dns "$JAIL/usr/share/"
install -d -o bind -g bind -m 0775 "$JAIL/var/cache/bind" "$JAIL/run/named"
