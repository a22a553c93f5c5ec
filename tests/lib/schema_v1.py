"""Schema v1 as tcp-audit 0.1 made it, in each store: the tables a test
fills to check a migration (tests/sqlite, tests/pgsql) or a report over an
archive no sink has opened since (tests/report)."""

# SQLite
SQLITE = """
CREATE TABLE tcp_events (uid TEXT PRIMARY KEY, timestamp TEXT NOT NULL, pid_on_cpu INTEGER,
 comm_on_cpu TEXT, src_ip TEXT, dst_ip TEXT, src_port INTEGER, dst_port INTEGER,
 old_state TEXT, new_state TEXT, time_ns INTEGER NOT NULL, family TEXT, tid_on_cpu INTEGER,
 owner_pid INTEGER, owner_uid INTEGER, owner_comm TEXT, sock_cookie INTEGER, netns INTEGER,
 cgroup_id INTEGER, host TEXT, seq INTEGER, ktime INTEGER);
CREATE TABLE tcp_events_socket_info (uid TEXT PRIMARY KEY, tcp_event_uid TEXT, id TEXT,
 inode INTEGER, user_id INTEGER, group_id INTEGER, state TEXT,
 CONSTRAINT fk_tcp_events FOREIGN KEY(tcp_event_uid) REFERENCES tcp_events(uid)
 ON DELETE CASCADE);
CREATE TABLE tcp_audit_gaps (uid TEXT PRIMARY KEY, timestamp TEXT NOT NULL,
 time_ns INTEGER NOT NULL, host TEXT, stage TEXT, lost INTEGER, seq INTEGER, ktime INTEGER);
CREATE INDEX tcp_events_timestamp ON tcp_events(timestamp);
CREATE INDEX tcp_events_dst ON tcp_events(dst_ip, dst_port);
CREATE INDEX tcp_events_cookie ON tcp_events(sock_cookie);
CREATE INDEX tcp_events_owner ON tcp_events(owner_pid);
CREATE INDEX tcp_events_socket_info_event ON tcp_events_socket_info(tcp_event_uid);
PRAGMA user_version = 1;
"""

# PostgreSQL, unpartitioned and partitioned by day; then PGSQL_REST for both
PGSQL_TABLES = """
CREATE TABLE tcp_events (uid TEXT COLLATE "C" PRIMARY KEY, timestamp TIMESTAMP, pid_on_cpu INTEGER,
 comm_on_cpu TEXT, src_ip INET, dst_ip INET, src_port INTEGER, dst_port INTEGER, old_state TEXT,
 new_state TEXT);
CREATE TABLE tcp_events_socket_info (uid TEXT COLLATE "C" PRIMARY KEY,
 tcp_event_uid TEXT COLLATE "C", id TEXT, inode INTEGER, user_id INTEGER, group_id INTEGER,
 state TEXT, CONSTRAINT fk_tcp_events FOREIGN KEY(tcp_event_uid) REFERENCES tcp_events(uid)
 ON DELETE CASCADE);
"""
PGSQL_PARTITIONED_TABLES = """
CREATE TABLE tcp_events (uid TEXT COLLATE "C", timestamp TIMESTAMP NOT NULL, pid_on_cpu INTEGER,
 comm_on_cpu TEXT, src_ip INET, dst_ip INET, src_port INTEGER, dst_port INTEGER,
 old_state TEXT, new_state TEXT, PRIMARY KEY (uid, timestamp)) PARTITION BY RANGE (timestamp);
CREATE TABLE tcp_events_socket_info (uid TEXT COLLATE "C", tcp_event_uid TEXT COLLATE "C",
 id TEXT, inode INTEGER, user_id INTEGER, group_id INTEGER, state TEXT,
 timestamp TIMESTAMP NOT NULL, PRIMARY KEY (uid, timestamp),
 CONSTRAINT fk_tcp_events FOREIGN KEY (tcp_event_uid, timestamp)
 REFERENCES tcp_events (uid, timestamp) ON DELETE CASCADE) PARTITION BY RANGE (timestamp);
CREATE TABLE tcp_events_20261124 PARTITION OF tcp_events
 FOR VALUES FROM ('2026-11-24') TO ('2026-11-25');
CREATE TABLE tcp_events_20261125 PARTITION OF tcp_events
 FOR VALUES FROM ('2026-11-25') TO ('2026-11-26');
CREATE TABLE tcp_events_socket_info_20261124 PARTITION OF tcp_events_socket_info
 FOR VALUES FROM ('2026-11-24') TO ('2026-11-25');
CREATE TABLE tcp_events_socket_info_20261125 PARTITION OF tcp_events_socket_info
 FOR VALUES FROM ('2026-11-25') TO ('2026-11-26');
"""
PGSQL_REST = """
ALTER TABLE tcp_events_socket_info ALTER COLUMN inode TYPE BIGINT,
 ALTER COLUMN user_id TYPE BIGINT, ALTER COLUMN group_id TYPE BIGINT;
ALTER TABLE tcp_events ADD COLUMN time_ns BIGINT, ADD COLUMN family TEXT,
 ADD COLUMN tid_on_cpu INTEGER, ADD COLUMN owner_pid INTEGER, ADD COLUMN owner_uid BIGINT,
 ADD COLUMN owner_comm TEXT, ADD COLUMN sock_cookie BIGINT, ADD COLUMN netns BIGINT,
 ADD COLUMN cgroup_id BIGINT, ADD COLUMN host TEXT, ADD COLUMN seq BIGINT, ADD COLUMN ktime BIGINT;
CREATE TABLE tcp_audit_gaps (uid TEXT COLLATE "C" PRIMARY KEY, timestamp TIMESTAMP,
 time_ns BIGINT, host TEXT, stage TEXT, lost BIGINT, seq BIGINT, ktime BIGINT);
CREATE INDEX tcp_events_timestamp ON tcp_events(timestamp);
CREATE INDEX tcp_events_dst ON tcp_events(dst_ip, dst_port);
CREATE INDEX tcp_events_cookie ON tcp_events(sock_cookie);
CREATE INDEX tcp_events_owner ON tcp_events(owner_pid);
CREATE INDEX tcp_events_socket_info_event ON tcp_events_socket_info(tcp_event_uid);
CREATE TABLE tcp_audit_schema (version INTEGER NOT NULL);
INSERT INTO tcp_audit_schema VALUES (1);
"""
