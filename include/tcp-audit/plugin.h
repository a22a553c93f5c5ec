/* SPDX-License-Identifier: MIT */
/*
 * tcp-audit plugin ABI: the only header a tcp-audit plugin needs.
 *
 * A plugin is a shared object exporting one function, tcp_audit_plugin_entry(),
 * that returns a static descriptor (struct tcp_audit_plugin).  The host checks
 * the descriptor's ABI version and size before it touches anything else, so a
 * plugin built for another ABI is refused with a clear message instead of
 * crashing.  Build plugins with -fvisibility=hidden and mark only the entry
 * point with TCP_AUDIT_EXPORT.
 *
 * Conventions:
 *  - Every callback returns 0 (or a count) on success and a negative errno on
 *    failure.  A failed call is retried; N consecutive failures of one plugin
 *    stop the run (exit 1).  Three values outside the errno range have a
 *    documented meaning: TCP_AUDIT_END (eventer: end of stream),
 *    TCP_AUDIT_FATAL (eventer: cannot go on, stop the run now) and
 *    TCP_AUDIT_RETRY (sinker: the store is temporarily unavailable, hand me
 *    the same batch again later; not counted as a failure).
 *  - Plugins never call exit() and never write to stdout/stderr on their own:
 *    they log through the logger the host passes in, which prefixes each line
 *    with the plugin's role and name ("[sink:pgsql] ...").
 *  - The host owns the event buffers.  A sinker that keeps events beyond the
 *    write() call copies them.
 *  - Options are declared in a table; the host parses and validates
 *    "-p KEY=VALUE" values against it and stores them, typed, into a config
 *    struct of config_size bytes whose fields the table addresses by offset.
 */
#ifndef TCP_AUDIT_PLUGIN_H
#define TCP_AUDIT_PLUGIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bumped on any incompatible change to the structs or callbacks below. */
#define TCP_AUDIT_ABI_VERSION 1u

#define TCP_AUDIT_EXPORT __attribute__((visibility("default")))
#define TCP_AUDIT_ENTRY_SYMBOL "tcp_audit_plugin_entry"

/* Return codes outside the errno range (errno values are below 4096). */
#define TCP_AUDIT_END (-100001)   /* eventer read(): no more events, ever */
#define TCP_AUDIT_RETRY (-100002) /* sinker write()/flush(): transient, retry */
#define TCP_AUDIT_FATAL (-100003) /* eventer read(): cannot go on (logged why) */

/* ------------------------------------------------------------------------ */
/* Events                                                                    */

/* Kernel TCP states (include/net/tcp_states.h); 0 means unknown. */
enum tcp_audit_tcp_state {
	TCP_AUDIT_TCP_ESTABLISHED = 1,
	TCP_AUDIT_TCP_SYN_SENT = 2,
	TCP_AUDIT_TCP_SYN_RECV = 3,
	TCP_AUDIT_TCP_FIN_WAIT1 = 4,
	TCP_AUDIT_TCP_FIN_WAIT2 = 5,
	TCP_AUDIT_TCP_TIME_WAIT = 6,
	TCP_AUDIT_TCP_CLOSE = 7,
	TCP_AUDIT_TCP_CLOSE_WAIT = 8,
	TCP_AUDIT_TCP_LAST_ACK = 9,
	TCP_AUDIT_TCP_LISTEN = 10,
	TCP_AUDIT_TCP_CLOSING = 11,
	TCP_AUDIT_TCP_NEW_SYN_RECV = 12,
};

/* Kernel socket_state (include/uapi/linux/net.h). */
enum tcp_audit_sock_state {
	TCP_AUDIT_SS_FREE = 0,
	TCP_AUDIT_SS_UNCONNECTED = 1,
	TCP_AUDIT_SS_CONNECTING = 2,
	TCP_AUDIT_SS_CONNECTED = 3,
	TCP_AUDIT_SS_DISCONNECTING = 4,
};

/*
 * Kinds are added without an ABI bump: a sinker stores or shows a kind it
 * does not know as it would a state change (its fields are those of one), or
 * skips it; it never fails on one.
 */
enum tcp_audit_event_kind {
	TCP_AUDIT_KIND_STATE_CHANGE = 0, /* a TCP state transition */
	TCP_AUDIT_KIND_GAP = 1,          /* gap_lost events were lost at gap_stage */
	/*
	 * A socket that existed when recording began, from the eventer's
	 * start-up snapshot: old_state == new_state == the state it was in,
	 * its addresses, ports, netns and, where known, cookie, owner (the
	 * process holding it then) and socket file.  No process on the CPU
	 * (pid_on_cpu 0, comm_on_cpu empty), no seq.  All of a run's come
	 * before its first state change.
	 */
	TCP_AUDIT_KIND_SNAPSHOT = 2,
	/*
	 * A TCP reset (RST) sent or received (reset_direction), with the
	 * addresses and ports as the socket sees them (saddr/sport local, the
	 * sender's for a sent one), and, where there is a socket, its state
	 * (old_state == new_state; 0 when there is none or it is not known),
	 * cookie (that of its state changes) and owner.  A reset sent for a
	 * segment that matched no socket (a SYN to a closed port) has no
	 * socket: no cookie, no owner, state 0.  reset_reason when the kernel
	 * gives one (TCP_AUDIT_HAS_RESET_REASON).
	 */
	TCP_AUDIT_KIND_RESET = 3,
};

/* For TCP_AUDIT_KIND_RESET. */
enum tcp_audit_reset_direction {
	TCP_AUDIT_RESET_SENT = 1,
	TCP_AUDIT_RESET_RECEIVED = 2,
};

/*
 * Why the kernel sent a reset: the kernel's enum sk_rst_reason (Linux 6.10+)
 * by name (SK_RST_REASON_NO_SOCKET is "NO_SOCKET"), numbered here once and
 * for all: eventers translate the kernel's numbers, which may change between
 * kernels, by name.  A name not listed here is not recorded.
 */
enum tcp_audit_reset_reason {
	TCP_AUDIT_RST_NOT_SPECIFIED = 0,
	TCP_AUDIT_RST_NO_SOCKET,
	TCP_AUDIT_RST_TCP_INVALID_ACK_SEQUENCE,
	TCP_AUDIT_RST_TCP_RFC7323_PAWS,
	TCP_AUDIT_RST_TCP_TOO_OLD_ACK,
	TCP_AUDIT_RST_TCP_ACK_UNSENT_DATA,
	TCP_AUDIT_RST_TCP_FLAGS,
	TCP_AUDIT_RST_TCP_OLD_ACK,
	TCP_AUDIT_RST_TCP_ABORT_ON_DATA,
	TCP_AUDIT_RST_TCP_TIMEWAIT_SOCKET,
	TCP_AUDIT_RST_INVALID_SYN,
	TCP_AUDIT_RST_TCP_ABORT_ON_CLOSE,
	TCP_AUDIT_RST_TCP_ABORT_ON_LINGER,
	TCP_AUDIT_RST_TCP_ABORT_ON_MEMORY,
	TCP_AUDIT_RST_TCP_STATE,
	TCP_AUDIT_RST_TCP_KEEPALIVE_TIMEOUT,
	TCP_AUDIT_RST_TCP_DISCONNECT_WITH_DATA,
	TCP_AUDIT_RST_MPTCP_RST_EUNSPEC,
	TCP_AUDIT_RST_MPTCP_RST_EMPTCP,
	TCP_AUDIT_RST_MPTCP_RST_ERESOURCE,
	TCP_AUDIT_RST_MPTCP_RST_EPROHIBIT,
	TCP_AUDIT_RST_MPTCP_RST_EWQ2BIG,
	TCP_AUDIT_RST_MPTCP_RST_EBADPERF,
	TCP_AUDIT_RST_MPTCP_RST_EMIDDLEBOX,
	TCP_AUDIT_RST_ERROR,
};

/* Where in the pipeline a gap happened. */
enum tcp_audit_gap_stage {
	TCP_AUDIT_STAGE_KERNEL = 0, /* kernel ring / trace buffer overflowed */
	TCP_AUDIT_STAGE_QUEUE = 1,  /* tcp-audit's in-memory queue */
	TCP_AUDIT_STAGE_SPOOL = 2,  /* tcp-audit's on-disk spool */
	TCP_AUDIT_STAGE_INPUT = 3,  /* an input the eventer skipped (replay) */
};

/* Validity bits for the optional fields of struct tcp_audit_event. */
enum tcp_audit_event_valid {
	TCP_AUDIT_HAS_OWNER = 1u << 0,      /* owner_pid, owner_uid, owner_comm */
	TCP_AUDIT_HAS_COOKIE = 1u << 1,     /* sock_cookie */
	TCP_AUDIT_HAS_SOCK_INODE = 1u << 2, /* sock_inode, sock_uid, sock_gid */
	TCP_AUDIT_HAS_SOCK_STATE = 1u << 3, /* sock_state */
	TCP_AUDIT_HAS_NETNS = 1u << 4,      /* netns */
	TCP_AUDIT_HAS_CGROUP = 1u << 5,     /* cgroup_id */
	TCP_AUDIT_HAS_SEQ = 1u << 6,        /* seq */
	TCP_AUDIT_HAS_HOST = 1u << 7,       /* host */
	TCP_AUDIT_HAS_KTIME = 1u << 8,      /* ktime_ns */
	TCP_AUDIT_HAS_TID = 1u << 9,        /* tid_on_cpu */
	TCP_AUDIT_HAS_ERROR = 1u << 10,     /* error */
	TCP_AUDIT_HAS_RESET_REASON = 1u << 11, /* reset_reason */
	TCP_AUDIT_HAS_MACHINE = 1u << 12,      /* machine */
};

#define TCP_AUDIT_COMM_LEN 16
#define TCP_AUDIT_HOST_LEN 80 /* HOST_NAME_MAX (64) + NUL, padded */

/*
 * One event: fixed size, no pointers, so it can be copied, queued and
 * spooled as plain bytes.  Numbers are in host byte order; addresses are in
 * network byte order (an IPv4 address fills the first 4 bytes of saddr/daddr,
 * the rest is zero).  Strings are NUL-terminated and NUL-padded.
 *
 * Fields are added compatibly in the reserved bytes (zero in events of older
 * eventers, unread by older sinks), each with a validity bit or a new kind;
 * the size and TCP_AUDIT_ABI_VERSION stay.  Added since the first release:
 * reset_direction, reset_reason, error and machine.
 */
struct tcp_audit_event {
	uint64_t time_ns;     /* wall clock, ns since the Unix epoch (UTC) */
	uint64_t ktime_ns;    /* kernel CLOCK_MONOTONIC timestamp, ns */
	uint64_t seq;         /* eventer's sequence number: a gap means loss */
	uint64_t sock_cookie; /* kernel socket cookie: one id per connection */
	uint64_t sock_inode;  /* inode of the socket file */
	uint64_t cgroup_id;   /* cgroup v2 id of the process on CPU */
	uint32_t valid;       /* TCP_AUDIT_HAS_* bits */
	uint32_t netns;       /* network namespace inode */
	uint32_t pid_on_cpu;  /* process (tgid) on the CPU when it happened */
	uint32_t tid_on_cpu;  /* thread on the CPU */
	uint32_t owner_pid;   /* process that owns the socket */
	uint32_t owner_uid;
	uint32_t sock_uid; /* socket inode's uid / gid */
	uint32_t sock_gid;
	uint16_t family; /* AF_INET or AF_INET6 */
	uint16_t sport;
	uint16_t dport;
	uint8_t old_state; /* enum tcp_audit_tcp_state */
	uint8_t new_state;
	uint8_t sock_state; /* enum tcp_audit_sock_state */
	uint8_t kind;       /* enum tcp_audit_event_kind */
	uint8_t gap_stage;  /* enum tcp_audit_gap_stage, for KIND_GAP */
	uint8_t reset_direction; /* enum tcp_audit_reset_direction, for KIND_RESET */
	uint8_t reset_reason;    /* enum tcp_audit_reset_reason, for KIND_RESET */
	uint8_t reserved0[1];
	/*
	 * The socket's error (an errno value: ECONNREFUSED, ETIMEDOUT, ...) on
	 * a transition to CLOSED that an error caused; HAS_ERROR only when
	 * there is one.
	 */
	uint16_t error;
	uint8_t saddr[16];
	uint8_t daddr[16];
	char comm_on_cpu[TCP_AUDIT_COMM_LEN];
	char owner_comm[TCP_AUDIT_COMM_LEN];
	char host[TCP_AUDIT_HOST_LEN];
	uint64_t gap_lost; /* for KIND_GAP: how many events were lost */
	/*
	 * The capturing machine: the first 64 bits of its machine id
	 * (/etc/machine-id, 32 hex digits), so that hosts of the same name are
	 * told apart.  Set by tcp-audit together with host, on the events that
	 * come without a host; eventers leave it alone.
	 */
	uint64_t machine;
};

_Static_assert(sizeof(struct tcp_audit_event) == 256, "event ABI size");
_Static_assert(offsetof(struct tcp_audit_event, error) == 94, "event ABI layout");
_Static_assert(offsetof(struct tcp_audit_event, saddr) == 96, "event ABI layout");

/* ------------------------------------------------------------------------ */
/* Logging                                                                   */

enum tcp_audit_log_level {
	TCP_AUDIT_LOG_ERROR = 0,
	TCP_AUDIT_LOG_WARNING = 1,
	TCP_AUDIT_LOG_INFO = 2,
	TCP_AUDIT_LOG_DEBUG = 3,
};

/* What the host hands to every plugin instance. */
struct tcp_audit_host {
	uint32_t abi_version; /* the host's TCP_AUDIT_ABI_VERSION */
	uint32_t struct_size; /* sizeof(struct tcp_audit_host) of the host */
	/* Logs one line, prefixed with the plugin's role and name. */
	void (*log)(const struct tcp_audit_host *host, int level, const char *fmt, ...)
		__attribute__((format(printf, 3, 4)));
	void *host_data; /* the host's, not the plugin's */
	/*
	 * Since tcp-audit 0.2; check with TCP_AUDIT_HOST_HAS(host,
	 * keep_capability).  The host drops its privileges once the eventer is
	 * open: an eventer calls this from open() for each capability (CAP_*
	 * from <linux/capability.h>) that read(), stats() or close() still need.
	 * An eventer that does not call it keeps none.
	 */
	void (*keep_capability)(const struct tcp_audit_host *host, int cap);
};

/* Whether a host struct of struct_size bytes has member (newer hosts add at the end). */
#define TCP_AUDIT_HOST_HAS(host, member)                                                   \
	((host)->struct_size >= offsetof(struct tcp_audit_host, member) +                  \
					sizeof(((struct tcp_audit_host *)0)->member) &&    \
	 (host)->member != NULL)

#define tcp_audit_log(host, level, ...) ((host)->log((host), (level), __VA_ARGS__))
#define tcp_audit_error(host, ...) tcp_audit_log(host, TCP_AUDIT_LOG_ERROR, __VA_ARGS__)
#define tcp_audit_warning(host, ...) tcp_audit_log(host, TCP_AUDIT_LOG_WARNING, __VA_ARGS__)
#define tcp_audit_info(host, ...) tcp_audit_log(host, TCP_AUDIT_LOG_INFO, __VA_ARGS__)
#define tcp_audit_debug(host, ...) tcp_audit_log(host, TCP_AUDIT_LOG_DEBUG, __VA_ARGS__)

/* ------------------------------------------------------------------------ */
/* Options                                                                   */

enum tcp_audit_option_type {
	TCP_AUDIT_OPT_STRING = 1, /* const char * (host-owned, valid until close) */
	TCP_AUDIT_OPT_BOOL = 2,   /* bool: true/false, yes/no, on/off, 1/0 */
	TCP_AUDIT_OPT_INT = 3,    /* int64_t within [min, max] */
	TCP_AUDIT_OPT_SIZE = 4,   /* uint64_t bytes, suffixes K M G (1024-based) */
	TCP_AUDIT_OPT_ENUM = 5,   /* int: index of the value in choices "a|b|c" */
};

struct tcp_audit_option {
	const char *key;
	int type;            /* enum tcp_audit_option_type */
	const char *def;     /* default as text, NULL for none (field left zero) */
	bool required;       /* must be given with -p */
	const char *help;    /* one line */
	size_t offset;       /* where the parsed value goes in the config struct */
	int64_t min, max;    /* INT and SIZE bounds (both 0: unbounded) */
	const char *choices; /* ENUM: values separated by '|' */
};

/* ------------------------------------------------------------------------ */
/* The descriptor                                                            */

enum tcp_audit_plugin_kind {
	TCP_AUDIT_EVENTER = 1,
	TCP_AUDIT_SINKER = 2,
};

/* eventer_read()'s timeout when the host stops: see below. */
#define TCP_AUDIT_READ_DRAIN (-1)

/* Counters an eventer reports; all cumulative since open(). */
struct tcp_audit_eventer_stats {
	uint64_t lost;    /* events lost where we cannot hold back (kernel) */
	uint64_t skipped; /* input records skipped (e.g. malformed replay lines) */
};

/*
 * A seal (tcp-audit --seal): a record that covers the batch it comes with.
 * The sink stores it beside the batch's events, in the same store and, where
 * the store has transactions, in the same one, so that a batch is never
 * there without its seal.  text is the seal as one JSON object (no newline)
 * whose fields are documented in the README ("Sealing"); a verifier checks it
 * byte for byte, so a sink stores the text as it is.  run and index are
 * fields of the text, for stores that key seals by them.  A batch retried
 * comes with the same seal.
 */
struct tcp_audit_seal {
	const char *text;
	size_t len;
	const char *run; /* 32 hex digits: the tcp-audit run */
	uint64_t index;  /* the seal's number in the run's chain for this sink */
	uint64_t time_ns; /* when it was made (wall clock), a field of the text */
	uint32_t count;  /* events of the batch */
	bool last;       /* the run's closing seal (no events) */
};

struct tcp_audit_plugin {
	uint32_t abi_version; /* TCP_AUDIT_ABI_VERSION the plugin was built with */
	uint32_t struct_size; /* sizeof(struct tcp_audit_plugin) it was built with */
	const char *name;     /* "bpf", "jsonl", ... */
	int kind;             /* enum tcp_audit_plugin_kind */
	const char *description;
	const struct tcp_audit_option *options; /* ends with a zeroed entry */
	size_t config_size;                     /* size of the config struct */

	/*
	 * Eventer.  open() gets the parsed config (host-owned, lives until
	 * close()).  read() fills up to max events and returns how many, waiting
	 * at most timeout_ms for the first one (0 on timeout), or TCP_AUDIT_END,
	 * TCP_AUDIT_FATAL, or a negative errno.  Events before an error are
	 * returned first; the error comes with the next call.  stats() may be
	 * NULL.
	 *
	 * timeout_ms == TCP_AUDIT_READ_DRAIN: the host is stopping; return only
	 * events that already happened and wait in the eventer's buffer (a kernel
	 * ring), without waiting, and 0 when there are none.  A source with no
	 * such buffer (a file being replayed) returns 0 at once.
	 */
	int (*eventer_open)(void **self, const void *config, const struct tcp_audit_host *host);
	int (*eventer_read)(void *self, struct tcp_audit_event *events, size_t max, int timeout_ms);
	int (*eventer_stats)(void *self, struct tcp_audit_eventer_stats *stats);
	void (*eventer_close)(void *self);

	/*
	 * Sinker.  write() stores n events (all of them, or returns an error);
	 * TCP_AUDIT_RETRY asks the host to hand the same batch again later.
	 * flush() makes everything written so far durable/visible; may be NULL.
	 */
	int (*sinker_open)(void **self, const void *config, const struct tcp_audit_host *host);
	int (*sinker_write)(void *self, const struct tcp_audit_event *events, size_t n);
	int (*sinker_flush)(void *self);
	void (*sinker_close)(void *self);

	/*
	 * Since tcp-audit 0.2 (read it with TCP_AUDIT_PLUGIN_HAS(desc, flags));
	 * TCP_AUDIT_PLUGIN_* bits.
	 */
	uint32_t flags;

	/*
	 * Sinker, added after flags (read it with TCP_AUDIT_PLUGIN_HAS(desc,
	 * sinker_reopen)); may be NULL.  Reopens the files the sink writes by
	 * their names, so that a file moved away (logrotate) is let go and a
	 * new one started: tcp-audit calls it after SIGHUP, in the sink's
	 * thread between two writes, after a flush().  On failure the sink
	 * keeps writing where it did (nothing is lost) and returns a negative
	 * errno, which is logged.
	 */
	int (*sinker_reopen)(void *self);

	/*
	 * Sinker, added after sinker_reopen (TCP_AUDIT_PLUGIN_HAS(desc,
	 * sinker_write_sealed)); may be NULL: the sink cannot be used with
	 * --seal.  As write(), for n events (n may be 0 for a closing seal), and
	 * stores seal with them (see struct tcp_audit_seal).
	 */
	int (*sinker_write_sealed)(void *self, const struct tcp_audit_event *events, size_t n,
				   const struct tcp_audit_seal *seal);
};

/*
 * An eventer whose input outlives the run (a file being replayed): what it
 * read can be read again, so tcp-audit does not spool it by default.
 */
#define TCP_AUDIT_PLUGIN_REREADABLE_INPUT (1u << 0)

/* The descriptor of the first release ended before flags. */
#define TCP_AUDIT_PLUGIN_MIN_SIZE offsetof(struct tcp_audit_plugin, flags)

/* Whether a descriptor of struct_size bytes has member (newer ones add at the end). */
#define TCP_AUDIT_PLUGIN_HAS(desc, member)                                                 \
	((desc)->struct_size >= offsetof(struct tcp_audit_plugin, member) +                \
					sizeof(((struct tcp_audit_plugin *)0)->member))

/*
 * The one exported symbol.  host_abi is the host's TCP_AUDIT_ABI_VERSION, so
 * a plugin could serve several; most just return their static descriptor.
 */
typedef const struct tcp_audit_plugin *(*tcp_audit_plugin_entry_fn)(uint32_t host_abi);
TCP_AUDIT_EXPORT const struct tcp_audit_plugin *tcp_audit_plugin_entry(uint32_t host_abi);

/* Fills in the two ABI fields of a descriptor. */
#define TCP_AUDIT_PLUGIN_HEADER \
	.abi_version = TCP_AUDIT_ABI_VERSION, .struct_size = sizeof(struct tcp_audit_plugin)

#ifdef __cplusplus
}
#endif

#endif /* TCP_AUDIT_PLUGIN_H */
