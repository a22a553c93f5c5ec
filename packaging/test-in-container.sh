#!/bin/bash
# Installs a tcp-audit .deb into a Debian 12 root file system, boots it with
# systemd-nspawn (systemd as PID 1, with the capabilities BPF needs) and checks
# it as a user would:
#   1. tcp-audit.service is active after boot (enabled by the package);
#   2. a connection made inside is in the SQLite archive, with its owner;
#   3. after kill -9 of the main process systemd restarts it, and every event
#      it had read before the kill is in the archive;
#   4. systemctl stop leaves a clean summary in the journal (nothing lost,
#      nothing undelivered) and the unit is not failed.
# Exit status 0 only if all of that holds.  Run as root.
#
#   packaging/test-in-container.sh tcp-audit_0.1.0_amd64.deb
#
# The root file system is made once with mmdebstrap (about a minute, from the
# Debian mirror) and kept in $TCP_AUDIT_ROOTFS (default
# /var/cache/tcp-audit-test/bookworm); each run works on a copy of it.
set -u

deb=${1:?usage: $0 TCP-AUDIT.deb}
[ -f "$deb" ] || { echo "$0: $deb: no such file" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 2; }
for tool in mmdebstrap systemd-nspawn nsenter; do
	command -v "$tool" >/dev/null || { echo "$0: $tool is missing (apt-get install mmdebstrap systemd-container util-linux)" >&2; exit 2; }
done

cache=${TCP_AUDIT_ROOTFS:-/var/cache/tcp-audit-test/bookworm}
# what the package needs, and what the checks use inside
include=systemd,systemd-sysv,dbus,iproute2,sqlite3,python3-minimal
include=$include,$(dpkg-deb -f "$deb" Depends | sed -e 's/([^)]*)//g' -e 's/ //g')
if [ ! -f "$cache/.complete" ] || [ "$(cat "$cache/.complete")" != "$include" ]; then
	echo "# making the root file system in $cache (mmdebstrap, about a minute)"
	rm -rf "$cache"
	mkdir -p "$(dirname "$cache")"
	mmdebstrap --quiet --variant=minbase --include="$include" bookworm "$cache" \
		"deb http://deb.debian.org/debian bookworm main" \
		"deb http://deb.debian.org/debian bookworm-updates main" \
		"deb http://deb.debian.org/debian-security bookworm-security main" ||
		{ echo "$0: mmdebstrap failed" >&2; exit 1; }
	echo "$include" > "$cache/.complete"
fi

work=$(mktemp -d /var/tmp/tcp-audit-container.XXXXXX)
root=$work/root
nspawn_pid=
failed=0
cleanup() {
	if [ -n "$nspawn_pid" ] && kill -0 "$nspawn_pid" 2>/dev/null; then
		kill -TERM "$nspawn_pid" 2>/dev/null
		for _ in $(seq 100); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$nspawn_pid" 2>/dev/null
		wait "$nspawn_pid" 2>/dev/null
	fi
	rm -rf "$work"
}
trap cleanup EXIT
ok() { echo "ok - $*"; }
fail() { echo "not ok - $*"; failed=1; }

cp -a "$cache" "$root" || exit 1
cp "$deb" "$root/tmp/tcp-audit.deb"
chroot "$root" dpkg -i /tmp/tcp-audit.deb > "$work/dpkg.log" 2>&1 ||
	{ cat "$work/dpkg.log"; echo "$0: dpkg -i failed" >&2; exit 1; }

systemd-nspawn -D "$root" --boot --register=no --keep-unit --console=passive \
	--machine=tcp-audit-test \
	--capability=CAP_BPF,CAP_PERFMON,CAP_SYS_ADMIN,CAP_SYS_PTRACE \
	--system-call-filter='bpf perf_event_open' > "$work/nspawn.log" 2>&1 &
nspawn_pid=$!

# systemd (PID 1 inside) is nspawn's child once it has started: nspawn's first
# child is a helper that makes the container's init and exits, so a child that
# does not run systemd yet may be gone a moment later (nsenter then fails)
init=
for _ in $(seq 300); do
	init=$(pgrep -x -P "$nspawn_pid" systemd | head -n 1)
	[ -n "$init" ] && break
	kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/nspawn.log"; echo "$0: the container did not boot" >&2; exit 1; }
	sleep 0.1
done
[ -n "$init" ] || { echo "$0: no PID 1 in the container" >&2; exit 1; }
inside() { nsenter -t "$init" -a "$@"; }
# until systemd has started what it starts at boot
timeout 120 nsenter -t "$init" -a systemctl is-system-running --wait >/dev/null 2>&1
journal() { inside journalctl -u tcp-audit.service --no-pager -o cat; }
wait_for() { # SECONDS COMMAND...: until it succeeds
	local t=$1; shift
	for _ in $(seq $((t * 10))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}
query() { inside sqlite3 -readonly /var/lib/tcp-audit/tcp-audit.db "$1" 2>/dev/null; }

# 1. active after boot
if wait_for 30 inside systemctl is-active --quiet tcp-audit.service; then
	ok "tcp-audit.service is active after boot"
else
	fail "tcp-audit.service is not active after boot"; inside systemctl status tcp-audit --no-pager; journal
fi

# 2. a connection made inside, by a process named "audit-probe"
port=$(inside python3 -c '
import socket, sys
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen()
port = srv.getsockname()[1]
pid = __import__("os").fork()
if pid == 0:
    open("/proc/self/comm", "w").write("audit-probe")
    c = socket.create_connection(("127.0.0.1", port)); c.recv(1); c.close(); sys.exit(0)
s, _ = srv.accept(); s.send(b"x"); s.close(); __import__("os").waitpid(pid, 0); print(port)')
sql="SELECT count(*) FROM tcp_events WHERE dst_port = $port AND new_state = 'SYN-SENT'
     AND owner_comm = 'audit-probe' AND owner_pid > 0"
probe_stored() { [ "$(query "$sql")" = 1 ]; }
if [ -n "$port" ] && wait_for 20 probe_stored; then
	ok "the connection to port $port is in the archive, owned by audit-probe"
else
	fail "the connection to port ${port:-?} is not in the archive with its owner"
	query "SELECT * FROM tcp_events WHERE dst_port = '$port' OR src_port = '$port'"
	journal | tail -20
fi

# 3. kill -9 with a churn under way: every event read before it is stored after
old=$(inside systemctl show -p MainPID --value tcp-audit.service)
inside python3 -c '
import socket, time
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(512)
end = time.monotonic() + 4
first = True
while time.monotonic() < end:
    c = socket.create_connection(srv.getsockname()); s, _ = srv.accept(); c.close(); s.close()
    if first:
        print("churning", flush=True)
        first = False' > "$work/churn.out" &
churn=$!
# the window of the check below: from a moment the churn was under way (python may
# take a while to start in a loaded machine) to the kill; the counters come half a
# second into it, so what was read then includes some of its events
wait_for 10 grep -q churning "$work/churn.out"
churn_at=$(date +%s.%N)
sleep 0.5
inside systemctl kill -s USR1 tcp-audit.service
wait_for 5 sh -c "nsenter -t $init -a journalctl -u tcp-audit.service -o cat | grep -q 'counters: events read'"
inside systemctl kill --kill-whom=main -s KILL tcp-audit.service  # kill -9 of the main process
killed_at=$(date +%s.%N)
wait "$churn"
read_before=$(journal | sed -n 's/.*counters: events read \([0-9]*\),.*/\1/p' | tail -n 1)
restarted=0
for _ in $(seq 150); do
	new=$(inside systemctl show -p MainPID --value tcp-audit.service)
	if [ "$new" != 0 ] && [ "$new" != "$old" ] && inside systemctl is-active --quiet tcp-audit.service; then
		restarted=1; break
	fi
	sleep 0.1
done
if [ "$restarted" = 1 ]; then
	ok "systemd restarted tcp-audit after kill -9 (pid $old -> $new)"
else
	fail "tcp-audit was not restarted after kill -9"; inside systemctl status tcp-audit --no-pager
fi
# the records of the first run (its snapshot included) carry times before the
# kill; the second run started after it
before_sql="SELECT count(*) FROM tcp_audit_events WHERE time_ns < CAST($killed_at * 1e9 AS INTEGER)"
window_sql="SELECT count(*) FROM tcp_audit_events
            WHERE time_ns BETWEEN CAST($churn_at * 1e9 AS INTEGER) AND CAST($killed_at * 1e9 AS INTEGER)"
stored_ok() { [ "$(query "$before_sql")" -ge "$read_before" ] && [ "$(query "$window_sql")" -gt 0 ]; }
if [ -n "$read_before" ] && wait_for 30 stored_ok; then
	ok "the $read_before events read before the kill are stored ($(query "$before_sql") recorded before it, $(query "$window_sql") of them from the churn, after it was under way)"
else
	fail "events read before the kill: ${read_before:-?}, stored from before it: $(query "$before_sql"), from the churn before it: $(query "$window_sql")"
	journal | tail -20
fi

# 4. a clean stop
inside systemctl stop tcp-audit.service
summary=$(journal | grep 'summary:' | tail -n 2)
if echo "$summary" | grep -q 'lost in kernel 0, lost in queue 0, lost in spool 0' &&
	echo "$summary" | grep -q 'undelivered 0$' &&
	[ "$(inside systemctl show -p Result --value tcp-audit.service)" = success ] &&
	! inside systemctl is-failed --quiet tcp-audit.service; then
	ok "systemctl stop: a clean summary in the journal, the unit not failed"
	echo "$summary" | sed 's/^/#   /'
else
	fail "systemctl stop: no clean summary, or the unit failed"
	inside systemctl status tcp-audit --no-pager; journal | tail -20
fi

[ "$failed" = 0 ] && echo "test-in-container: all checks passed" ||
	echo "test-in-container: FAILED"
exit "$failed"
