-- A database of schema v2 as tcp-audit made it before reset records (commit a9df6d9:
-- tcp_audit_events, partitioned by the hour, without reset_direction, reset_reason and
-- error; tcp_events without error; no tcp_audit_resets): pg_dump --no-owner
-- --no-privileges (PostgreSQL 15) of the database its pgsql sink wrote from store_lines()
-- and SNAPSHOT_LINE (tests/lib/tcpaudit.py), without pg_dump's comments and its
-- \restrict line.
SET statement_timeout = 0;
SET lock_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
SET client_encoding = 'UTF8';
SET standard_conforming_strings = on;
SELECT pg_catalog.set_config('search_path', '', false);
SET check_function_bodies = false;
SET xmloption = content;
SET client_min_messages = warning;
SET row_security = off;

CREATE FUNCTION public.tcp_audit_timestamp(ns bigint) RETURNS timestamp without time zone
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$SELECT '1970-01-01 00:00:00'::timestamp + ((ns + 500) / 1000) * interval '1 microsecond'$$;

SET default_tablespace = '';

CREATE TABLE public.tcp_audit_events (
    uid uuid NOT NULL,
    time_ns bigint NOT NULL,
    sock_cookie bigint,
    sock_inode bigint,
    cgroup_id bigint,
    seq bigint,
    ktime bigint,
    gap_lost bigint,
    owner_uid bigint,
    sock_uid bigint,
    sock_gid bigint,
    netns bigint,
    pid_on_cpu integer,
    tid_on_cpu integer,
    owner_pid integer,
    sport integer,
    dport integer,
    kind smallint NOT NULL,
    family smallint,
    old_state smallint,
    new_state smallint,
    sock_state smallint,
    gap_stage smallint,
    saddr inet,
    daddr inet,
    host text,
    comm_on_cpu text,
    owner_comm text
)
PARTITION BY RANGE (time_ns);

SET default_table_access_method = heap;

CREATE TABLE public.tcp_audit_events_2026112501 (
    uid uuid NOT NULL,
    time_ns bigint NOT NULL,
    sock_cookie bigint,
    sock_inode bigint,
    cgroup_id bigint,
    seq bigint,
    ktime bigint,
    gap_lost bigint,
    owner_uid bigint,
    sock_uid bigint,
    sock_gid bigint,
    netns bigint,
    pid_on_cpu integer,
    tid_on_cpu integer,
    owner_pid integer,
    sport integer,
    dport integer,
    kind smallint NOT NULL,
    family smallint,
    old_state smallint,
    new_state smallint,
    sock_state smallint,
    gap_stage smallint,
    saddr inet,
    daddr inet,
    host text,
    comm_on_cpu text,
    owner_comm text
);

CREATE VIEW public.tcp_audit_gaps AS
 SELECT ((tcp_audit_events.uid)::text COLLATE "C") AS uid,
    public.tcp_audit_timestamp(tcp_audit_events.time_ns) AS "timestamp",
    tcp_audit_events.time_ns,
    tcp_audit_events.host,
        CASE tcp_audit_events.gap_stage
            WHEN 0 THEN 'kernel'::text
            WHEN 1 THEN 'queue'::text
            WHEN 2 THEN 'spool'::text
            WHEN 3 THEN 'input'::text
            ELSE (tcp_audit_events.gap_stage)::text
        END AS stage,
    tcp_audit_events.gap_lost AS lost,
    tcp_audit_events.seq,
    tcp_audit_events.ktime
   FROM public.tcp_audit_events
  WHERE (tcp_audit_events.kind = 1);

CREATE TABLE public.tcp_audit_schema (
    version integer NOT NULL,
    chunk text
);

CREATE VIEW public.tcp_audit_snapshots AS
 SELECT ((tcp_audit_events.uid)::text COLLATE "C") AS uid,
    public.tcp_audit_timestamp(tcp_audit_events.time_ns) AS "timestamp",
    tcp_audit_events.time_ns,
    tcp_audit_events.host,
        CASE tcp_audit_events.family
            WHEN 2 THEN 'inet'::text
            WHEN 10 THEN 'inet6'::text
            ELSE (tcp_audit_events.family)::text
        END AS family,
    tcp_audit_events.saddr,
    tcp_audit_events.sport,
    tcp_audit_events.daddr,
    tcp_audit_events.dport,
        CASE tcp_audit_events.new_state
            WHEN 1 THEN 'ESTABLISHED'::text
            WHEN 2 THEN 'SYN-SENT'::text
            WHEN 3 THEN 'SYN-RECEIVED'::text
            WHEN 4 THEN 'FIN-WAIT-1'::text
            WHEN 5 THEN 'FIN-WAIT-2'::text
            WHEN 6 THEN 'TIME-WAIT'::text
            WHEN 7 THEN 'CLOSED'::text
            WHEN 8 THEN 'CLOSE-WAIT'::text
            WHEN 9 THEN 'LAST-ACK'::text
            WHEN 10 THEN 'LISTEN'::text
            WHEN 11 THEN 'CLOSING'::text
            WHEN 12 THEN 'NEW-SYN-RECV'::text
            ELSE (tcp_audit_events.new_state)::text
        END AS state,
    tcp_audit_events.owner_pid,
    tcp_audit_events.owner_uid,
    tcp_audit_events.owner_comm,
    tcp_audit_events.sock_cookie,
    tcp_audit_events.sock_inode,
    tcp_audit_events.sock_uid,
    tcp_audit_events.sock_gid,
    tcp_audit_events.netns,
    tcp_audit_events.cgroup_id
   FROM public.tcp_audit_events
  WHERE (tcp_audit_events.kind = 2);

CREATE VIEW public.tcp_events AS
 SELECT ((tcp_audit_events.uid)::text COLLATE "C") AS uid,
    public.tcp_audit_timestamp(tcp_audit_events.time_ns) AS "timestamp",
    tcp_audit_events.pid_on_cpu,
    tcp_audit_events.comm_on_cpu,
    tcp_audit_events.saddr AS src_ip,
    tcp_audit_events.daddr AS dst_ip,
    tcp_audit_events.sport AS src_port,
    tcp_audit_events.dport AS dst_port,
        CASE tcp_audit_events.old_state
            WHEN 1 THEN 'ESTABLISHED'::text
            WHEN 2 THEN 'SYN-SENT'::text
            WHEN 3 THEN 'SYN-RECEIVED'::text
            WHEN 4 THEN 'FIN-WAIT-1'::text
            WHEN 5 THEN 'FIN-WAIT-2'::text
            WHEN 6 THEN 'TIME-WAIT'::text
            WHEN 7 THEN 'CLOSED'::text
            WHEN 8 THEN 'CLOSE-WAIT'::text
            WHEN 9 THEN 'LAST-ACK'::text
            WHEN 10 THEN 'LISTEN'::text
            WHEN 11 THEN 'CLOSING'::text
            WHEN 12 THEN 'NEW-SYN-RECV'::text
            ELSE (tcp_audit_events.old_state)::text
        END AS old_state,
        CASE tcp_audit_events.new_state
            WHEN 1 THEN 'ESTABLISHED'::text
            WHEN 2 THEN 'SYN-SENT'::text
            WHEN 3 THEN 'SYN-RECEIVED'::text
            WHEN 4 THEN 'FIN-WAIT-1'::text
            WHEN 5 THEN 'FIN-WAIT-2'::text
            WHEN 6 THEN 'TIME-WAIT'::text
            WHEN 7 THEN 'CLOSED'::text
            WHEN 8 THEN 'CLOSE-WAIT'::text
            WHEN 9 THEN 'LAST-ACK'::text
            WHEN 10 THEN 'LISTEN'::text
            WHEN 11 THEN 'CLOSING'::text
            WHEN 12 THEN 'NEW-SYN-RECV'::text
            ELSE (tcp_audit_events.new_state)::text
        END AS new_state,
    tcp_audit_events.time_ns,
        CASE tcp_audit_events.family
            WHEN 2 THEN 'inet'::text
            WHEN 10 THEN 'inet6'::text
            ELSE (tcp_audit_events.family)::text
        END AS family,
    tcp_audit_events.tid_on_cpu,
    tcp_audit_events.owner_pid,
    tcp_audit_events.owner_uid,
    tcp_audit_events.owner_comm,
    tcp_audit_events.sock_cookie,
    tcp_audit_events.netns,
    tcp_audit_events.cgroup_id,
    tcp_audit_events.host,
    tcp_audit_events.seq,
    tcp_audit_events.ktime
   FROM public.tcp_audit_events
  WHERE (tcp_audit_events.kind = 0);

CREATE VIEW public.tcp_events_socket_info AS
 SELECT ((tcp_audit_events.uid)::text COLLATE "C") AS uid,
    ((tcp_audit_events.uid)::text COLLATE "C") AS tcp_event_uid,
    to_hex(tcp_audit_events.sock_cookie) AS id,
    tcp_audit_events.sock_inode AS inode,
    tcp_audit_events.sock_uid AS user_id,
    tcp_audit_events.sock_gid AS group_id,
        CASE tcp_audit_events.sock_state
            WHEN 0 THEN 'FREE'::text
            WHEN 1 THEN 'UNCONNECTED'::text
            WHEN 2 THEN 'CONNECTING'::text
            WHEN 3 THEN 'CONNECTED'::text
            WHEN 4 THEN 'DISCONNECTING'::text
            ELSE (tcp_audit_events.sock_state)::text
        END AS state,
    public.tcp_audit_timestamp(tcp_audit_events.time_ns) AS "timestamp"
   FROM public.tcp_audit_events
  WHERE ((tcp_audit_events.kind = 0) AND (tcp_audit_events.sock_inode IS NOT NULL));

ALTER TABLE ONLY public.tcp_audit_events ATTACH PARTITION public.tcp_audit_events_2026112501 FOR VALUES FROM ('1795568400000000000') TO ('1795572000000000000');

COPY public.tcp_audit_events_2026112501 (uid, time_ns, sock_cookie, sock_inode, cgroup_id, seq, ktime, gap_lost, owner_uid, sock_uid, sock_gid, netns, pid_on_cpu, tid_on_cpu, owner_pid, sport, dport, kind, family, old_state, new_state, sock_state, gap_stage, saddr, daddr, host, comm_on_cpu, owner_comm) FROM stdin;
18eb26d8-53eb-5e01-a2e9-be380537643d	1795571587000000001	1001	50001	7	1	1000001	\N	1000	1000	1000	4026531840	100	101	100	40001	8080	0	2	7	2	2	\N	127.0.0.1	127.0.0.2	host-a	curl	curl
18eb26d8-53eb-5e02-0599-df9758e447a3	1795571587000000002	1002	50002	7	2	1000002	\N	1000	1000	1000	4026531840	100	101	100	40002	8080	0	2	7	2	2	\N	127.0.0.1	127.0.0.2	host-a	curl	curl
18eb26d8-53eb-5e03-0699-4335ca8ca0e4	1795571587000000003	1003	50003	7	3	1000003	\N	1000	1000	1000	4026531840	100	101	100	40003	8080	0	2	7	2	2	\N	127.0.0.1	127.0.0.2	host-a	curl	curl
18eb26d8-53eb-5e04-182f-5369a1f52d53	1795571587000000004	1004	50004	7	4	1000004	\N	1000	1000	1000	4026531840	100	101	100	40004	8080	0	2	7	2	2	\N	127.0.0.1	127.0.0.2	host-a	curl	curl
18eb26d8-53eb-5e05-a9a5-9138dcf8a313	1795571587000000005	1005	50005	7	5	1000005	\N	1000	1000	1000	4026531840	100	101	100	40005	8080	0	2	7	2	2	\N	127.0.0.1	127.0.0.2	host-a	curl	curl
18eb26d8-53eb-5e06-7ac9-e7561526d4cf	1795571587000000006	1006	50006	7	6	1000006	\N	1000	1000	1000	4026531840	100	101	100	40006	8080	0	10	7	2	2	\N	::1	2001:db8::42	host-a	we"i\trdÿ	curl
18eb26d8-53eb-5e07-ac60-683f7c92e96f	1795571587000000007	\N	\N	\N	7	1000007	\N	\N	\N	\N	\N	100	\N	\N	40007	8080	0	2	7	2	\N	\N	127.0.0.1	127.0.0.2	host-a	curl	\N
18eb26d8-8f86-2800-d36a-09fa7c1ddac9	1795571588000000000	\N	\N	\N	\N	\N	42	\N	\N	\N	\N	\N	\N	\N	\N	\N	1	\N	\N	\N	\N	0	\N	\N	host-a	\N	\N
18eb26d8-1850-9400-c26a-fdf24d86e3b6	1795571586000000000	4242	99	\N	\N	5	\N	1000	1000	1000	4026531840	0	\N	77	8443	0	2	10	10	10	\N	\N	::1	::	host-a		nginx
\.

COPY public.tcp_audit_schema (version, chunk) FROM stdin;
2	hour
\.

ALTER TABLE ONLY public.tcp_audit_events
    ADD CONSTRAINT tcp_audit_events_pkey PRIMARY KEY (uid, time_ns);

ALTER TABLE ONLY public.tcp_audit_events_2026112501
    ADD CONSTRAINT tcp_audit_events_2026112501_pkey PRIMARY KEY (uid, time_ns);

CREATE INDEX tcp_audit_events_gaps ON ONLY public.tcp_audit_events USING btree (time_ns) WHERE (kind = 1);

CREATE INDEX tcp_audit_events_2026112501_time_ns_idx ON public.tcp_audit_events_2026112501 USING btree (time_ns) WHERE (kind = 1);

CREATE INDEX tcp_audit_events_brin ON ONLY public.tcp_audit_events USING brin (time_ns, public.tcp_audit_timestamp(time_ns), sock_cookie) WITH (autosummarize='on');

CREATE INDEX tcp_audit_events_2026112501_time_ns_tcp_audit_timestamp_soc_idx ON public.tcp_audit_events_2026112501 USING brin (time_ns, public.tcp_audit_timestamp(time_ns), sock_cookie) WITH (autosummarize='on');

CREATE INDEX tcp_audit_events_brin_uid ON ONLY public.tcp_audit_events USING brin (((uid)::text) COLLATE "C") WITH (autosummarize='on');

CREATE INDEX tcp_audit_events_2026112501_uid_idx ON public.tcp_audit_events_2026112501 USING brin (((uid)::text) COLLATE "C") WITH (autosummarize='on');

ALTER INDEX public.tcp_audit_events_pkey ATTACH PARTITION public.tcp_audit_events_2026112501_pkey;

ALTER INDEX public.tcp_audit_events_gaps ATTACH PARTITION public.tcp_audit_events_2026112501_time_ns_idx;

ALTER INDEX public.tcp_audit_events_brin ATTACH PARTITION public.tcp_audit_events_2026112501_time_ns_tcp_audit_timestamp_soc_idx;

ALTER INDEX public.tcp_audit_events_brin_uid ATTACH PARTITION public.tcp_audit_events_2026112501_uid_idx;
