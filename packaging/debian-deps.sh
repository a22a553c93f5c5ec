#!/bin/sh
# Installs, on Debian 12, what tcp-audit needs to build and run; with --test,
# also what its test suite needs (PostgreSQL, cmocka, valgrind, ...).
# Run as root.
set -eu
pkgs="meson ninja-build gcc libc6-dev pkgconf clang llvm libbpf-dev bpftool libelf-dev libsystemd-dev
      libmicrohttpd-dev libsodium-dev libssl-dev zlib1g-dev libsqlite3-dev libpq-dev libcurl4-openssl-dev libtracefs-dev libtraceevent-dev"
if [ "${1:-}" = "--test" ]; then
	pkgs="$pkgs python3 libcmocka-dev sqlite3 postgresql valgrind binutils iproute2
	      procps util-linux nftables clickhouse-server zookeeper openssl logrotate prometheus groff-base
	      git debhelper lintian systemd mmdebstrap systemd-container podman runc chromium"
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
