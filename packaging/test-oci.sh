#!/bin/bash
# Builds the OCI images with podman and checks them as a user would:
#   1. packaging/oci/Containerfile: tcp-audit with every built-in plugin, from
#      the .deb, on a Debian 12 base made by mmdebstrap (no registry here);
#      run with the fewest capabilities that work, a connection made on the
#      host shows up in the container's output (JSON lines);
#   2. the original's way of composing: an image carrying only a third-party
#      plugin (packaging/oci/example-plugin, built against tcp-audit-dev), and
#      Containerfile.compose copying it into the first image by path; run, it
#      counts the host's connection.
# Exit status 0 only if all of that holds.  Run as root.
#
#   packaging/test-oci.sh tcp-audit_0.1.0_amd64.deb tcp-audit-dev_0.1.0_amd64.deb
set -u

deb=${1:?usage: $0 TCP-AUDIT.deb TCP-AUDIT-DEV.deb}
dev=${2:?usage: $0 TCP-AUDIT.deb TCP-AUDIT-DEV.deb}
here=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 2; }
for f in "$deb" "$dev"; do [ -f "$f" ] || { echo "$0: $f: no such file" >&2; exit 2; }; done
for tool in podman mmdebstrap runc cc python3; do
	command -v "$tool" >/dev/null || { echo "$0: $tool is missing (apt-get install podman runc mmdebstrap gcc python3)" >&2; exit 2; }
done

work=$(mktemp -d /var/tmp/tcp-audit-oci.XXXXXX)
failed=0
names=()
cleanup() {
	for n in "${names[@]}"; do podman rm -f "$n" >/dev/null 2>&1; done
	podman rmi -f localhost/tcp-audit-counting:test localhost/tcp-audit-count-sink:test \
		localhost/tcp-audit:test >/dev/null 2>&1  # the base stays, for the next run
	podman image prune -f >/dev/null 2>&1
	rm -rf "$work"
}
trap cleanup EXIT
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; failed=1; }

# podman on these machines: runc (crun fails on hybrid cgroups), ulimits that
# need no CAP_SYS_RESOURCE, host networking (no bridge)
cat > "$work/containers.conf" <<'EOF'
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
netns = "host"
[engine]
runtime = "runc"
EOF
export CONTAINERS_CONF=$work/containers.conf

# the base: Debian 12 with the package's libraries, imported once
include=$(dpkg-deb -f "$deb" Depends | sed -e 's/([^)]*)//g' -e 's/ //g')
base=localhost/tcp-audit-base:bookworm
if [ "$(podman image inspect --format '{{index .Labels "tcp-audit.include"}}' "$base" 2>/dev/null)" != "$include" ]; then
	echo "# making the base image $base (mmdebstrap, about a minute)"
	mmdebstrap --quiet --variant=minbase --include="$include" bookworm "$work/base.tar" \
		"deb http://deb.debian.org/debian bookworm main" \
		"deb http://deb.debian.org/debian bookworm-updates main" \
		"deb http://deb.debian.org/debian-security bookworm-security main" ||
		{ echo "$0: mmdebstrap failed" >&2; exit 1; }
	podman import --change "LABEL tcp-audit.include=$include" "$work/base.tar" "$base" >/dev/null ||
		{ echo "$0: podman import failed" >&2; exit 1; }
	rm -f "$work/base.tar"
fi

build() { # LOG ARGS...
	local log=$1; shift
	if podman build --network=host "$@" > "$work/$log" 2>&1; then return 0; fi
	tail -30 "$work/$log"; return 1
}

mkdir -p "$work/ctx" "$work/plugin"
cp "$deb" "$work/ctx/"
if build main.log -f "$here/oci/Containerfile" --build-arg BASE="$base" -t localhost/tcp-audit:test "$work/ctx"; then
	ok "built the tcp-audit image from the .deb"
else
	fail "cannot build the tcp-audit image"; exit 1
fi

# a third-party plugin, built against tcp-audit-dev alone, in an image of its own
dpkg-deb -x "$dev" "$work/dev"
if cc -Wall -Wextra -Werror -shared -fPIC -O2 -I "$work/dev/usr/include" \
	-o "$work/plugin/tcp-audit-count-sink.so" "$here/oci/example-plugin/count-sink.c" &&
	build plugin.log -f "$here/oci/Containerfile.plugin" --build-arg SO=tcp-audit-count-sink.so \
		-t localhost/tcp-audit-count-sink:test "$work/plugin" &&
	build compose.log -f "$here/oci/Containerfile.compose" --build-arg TCP_AUDIT=localhost/tcp-audit:test \
		--build-arg PLUGIN=localhost/tcp-audit-count-sink:test -t localhost/tcp-audit-counting:test "$work/plugin"
then
	ok "built the plugin image and composed it into the tcp-audit image, the original's way"
else
	fail "cannot build or compose the plugin image"
fi

# The fewest capabilities that work, measured with podman 4.3 and its default
# seccomp profile: CAP_BPF + CAP_PERFMON are refused (the profile allows bpf()
# only with CAP_SYS_ADMIN; with --security-opt seccomp=unconfined they load the
# programs, but tracefs cannot be mounted and accepted sockets lose their
# owner); CAP_SYS_ADMIN alone does all of it (the kernel lets it stand for
# CAP_BPF and CAP_PERFMON).
caps=CAP_SYS_ADMIN

# Runs IMAGE with ARGS, makes a connection on the host to a port of its own,
# stops the container (SIGTERM) and leaves its output in $work/NAME.out.
run_and_connect() { # NAME IMAGE ARGS...
	local name=$1 image=$2; shift 2
	names+=("$name")
	podman run -d --name "$name" --network=host --cap-drop=all --cap-add="$caps" \
		"$image" "$@" > /dev/null || return 1
	for _ in $(seq 300); do
		podman logs "$name" 2>&1 | grep -q 'tcp-audit: started' && break
		[ "$(podman inspect -f '{{.State.Running}}' "$name")" = true ] || break
		sleep 0.1
	done
	python3 -c '
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", int(sys.argv[1]))); srv.listen()
c = socket.create_connection(("127.0.0.1", int(sys.argv[1]))); s, _ = srv.accept()
c.close(); s.close(); srv.close()' "$port"
	sleep 1
	podman stop -t 30 "$name" > /dev/null
	podman logs "$name" > "$work/$name.out" 2> "$work/$name.err"
}

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if run_and_connect tcp-audit-oci-test localhost/tcp-audit:test --event bpf -p ports="$port" \
	-p snapshot=false --sink jsonl &&
	grep -q "\"dport\":$port,.*\"new_state\":\"SYN-SENT\"" "$work/tcp-audit-oci-test.out" &&
	grep -q 'summary: sink jsonl: written [1-9]' "$work/tcp-audit-oci-test.err" &&
	[ "$(podman inspect -f '{{.State.ExitCode}}' tcp-audit-oci-test)" = 143 ]; then
	ok "the image, run with $caps, recorded the host's connection to port $port"
else
	fail "the image did not record the connection to port $port"
	cat "$work/tcp-audit-oci-test.err" "$work/tcp-audit-oci-test.out" 2>/dev/null | tail -20
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if run_and_connect tcp-audit-oci-compose localhost/tcp-audit-counting:test -p path=/dev/stdout &&
	grep -q '^state changes [1-9]' "$work/tcp-audit-oci-compose.out"; then
	ok "the composed image ran the third-party sink: $(cat "$work/tcp-audit-oci-compose.out")"
else
	fail "the composed image did not count"
	cat "$work/tcp-audit-oci-compose.err" "$work/tcp-audit-oci-compose.out" 2>/dev/null | tail -20
fi

[ "$failed" = 0 ] && echo "test-oci: all checks passed" || echo "test-oci: FAILED"
exit "$failed"
