/* SPDX-License-Identifier: MIT */
/*
 * tcp-audit: loads one eventer and one or more sinks and pipes TCP state
 * change events from the one to the others until told to stop.
 *
 * Start-up is all-or-nothing: every plugin is loaded and every option checked
 * before any plugin is opened, so a mistake on the command line never leaves
 * half a run behind (exit 2).
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "options.h"
#include "pipeline.h"
#include "plugin-loader.h"
#include "privileges.h"
#include "report.h"
#include "seal.h"
#include "spool.h"
#include "state-dir.h"

#define EXIT_USAGE 2
#define MAX_SINKS 16
#define MAX_PARAMS 64
#define DEFAULT_QUEUE_SIZE 65536
#define DEFAULT_BATCH_SIZE 4096
#define DEFAULT_BACKLOG (1l << 20) /* events: 256 MiB at most, used only while sinks lag */
#define DEFAULT_MAX_ERRORS 5
#define DEFAULT_SPOOL_SIZE (1ull << 30)
#define DEFAULT_STOP_GRACE_S 5

static const char *const auto_candidates[] = {"bpf", "tracefs"};
#define N_AUTO (sizeof(auto_candidates) / sizeof(auto_candidates[0]))

/* One --event or --sink and its -p arguments. */
struct instance {
	const char *spec; /* NAME or PATH as given */
	int kind;
	struct option_arg args[MAX_PARAMS];
	size_t n_args;

	struct loaded_plugin lp;
	void *config;
	void *self;
	struct plugin_logger logger;
	char label[64];
};

struct cli {
	struct instance event;
	bool event_given;
	struct instance sinks[MAX_SINKS];
	size_t n_sinks;
	long max_errors;
	long queue_size;
	long batch_size;
	long backlog;
	const char *spool_dir; /* --spool DIR, or the default one (see choose_spool) */
	bool no_spool;         /* --spool none */
	char default_spool[PATH_MAX];
	uint64_t spool_size;
	int spool_on_full;
	bool spool_tuned; /* --spool-size or --spool-on-full given */
	const char *memory_tuned; /* --queue-size or --backlog given */
	const char *user;
	long stop_grace;
	const char *metrics; /* --metrics HOST:PORT */
	const char *seal;    /* --seal KEYFILE */
	const char *host;    /* --host NAME */
	bool list_plugins;
};

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: tcp-audit [--event NAME|PATH [-p KEY=VALUE]...] [--sink NAME|PATH [-p "
		"KEY=VALUE]...]...\n"
		"       tcp-audit seal-init KEYFILE [--interval SECONDS]\n"
		"       tcp-audit verify SOURCE --verify-key KEY\n"
		"       tcp-audit report SOURCE [--since T] [--until T] [--format text|json] ...\n"
		"       tcp-audit --list-plugins | --help | --version\n"
		"\n"
		"Captures every TCP connection state change of this machine (IPv4 and IPv6) and\n"
		"stores the events.  An eventer plugin gets them from the kernel; one or more sink\n"
		"plugins store them.\n"
		"\n"
		"Plugins:\n"
		"  --event NAME|PATH   where events come from (default: auto = bpf, else tracefs)\n"
		"  --sink NAME|PATH    where events go; repeat for several (default: sqlite, in\n"
		"                      $STATE_DIRECTORY/tcp-audit.db, else %s/tcp-audit.db,\n"
		"                      plus a line per event on stdout when it is a terminal)\n"
		"  -p, --param KEY=VALUE\n"
		"                      an option of the --event or --sink just before it\n"
		"  --list-plugins      list the plugins found, with their options\n"
		"\n"
		"  NAME is tcp-audit-NAME-eventer.so or tcp-audit-NAME-sink.so in the plugin\n"
		"  directories (%s;\n"
		"  $TCP_AUDIT_PLUGIN_PATH, ':'-separated, overrides); an argument with a '/'\n"
		"  is a path.\n"
		"\n"
		"Pipeline:\n"
		"  --max-errors N      consecutive failures of one plugin that stop the run\n"
		"                      (default %d; exit status 1); a store that is away or\n"
		"                      full is waited for, however long, and not counted\n"
		"  --batch-size N      most events per read and per sink write (default %d)\n"
		"  --queue-size N      with --spool none: events held between the eventer and the\n"
		"                      sinks (default %d)\n"
		"  --backlog N         with --spool none: more events held in memory (256 bytes\n"
		"                      each) while a sink is a whole queue behind (default %ld,\n"
		"                      freed as it drains; 0: none); past it, reading waits and\n"
		"                      the kernel's buffer takes the rest\n"
		"\n"
		"Spool (nothing lost when a sink is down or tcp-audit is killed):\n"
		"  --spool DIR|none    every event goes to files in DIR first; each sink reads\n"
		"                      from there at its own pace and its position is saved, so\n"
		"                      a sink that is down holds back no other, memory does not\n"
		"                      grow with a burst, and the next start delivers what a sink\n"
		"                      had not stored.  Default: $STATE_DIRECTORY/spool, else\n"
		"                      %s/spool (none for an eventer that reads\n"
		"                      a file, such as replay).  none: events wait in memory\n"
		"                      (--queue-size, --backlog) and are lost with the process\n"
		"  --spool-size SIZE   cap on DIR's files, K/M/G suffixes (default 1G, at least 1M)\n"
		"  --spool-on-full block|drop_oldest\n"
		"                      at the cap: reading waits for the sinks and the kernel's\n"
		"                      buffer takes new events (block, default), or the oldest\n"
		"                      events a sink has not stored are dropped; either way loss\n"
		"                      is counted and written to every sink as a gap record\n"
		"  --stop-grace SECONDS\n"
		"                      at a stop, how long a sink that cannot store is waited\n"
		"                      for before its events are left in the spool (default %d)\n"
		"\n"
		"Privileges:\n"
		"  --user NAME         once the eventer is attached, run as this user: the sinks\n"
		"                      and the spool are opened as NAME, their files are NAME's\n"
		"  (always)            once the eventer is attached, every capability it does not\n"
		"                      need is dropped (bpf: all; tracefs: all but\n"
		"                      cap_dac_override, to read its stats and remove its instance)\n"
		"\n"
		"Integrity:\n"
		"  --seal KEYFILE      seal every batch each sink stores: a record beside it that\n"
		"                      only the key of that time could make (the key moves on\n"
		"                      every interval and the old one is erased, so whoever\n"
		"                      reads KEYFILE later cannot forge what was sealed before);\n"
		"                      KEYFILE from tcp-audit seal-init; check an archive with\n"
		"                      tcp-audit verify (see tcp-audit verify --help)\n"
		"\n"
		"Monitoring:\n"
		"  --metrics HOST:PORT\n"
		"                      serve the counters for Prometheus at\n"
		"                      http://HOST:PORT/metrics (off by default; [::1]:PORT for\n"
		"                      IPv6, :PORT for every address, port 0 picks a free one);\n"
		"                      the Prometheus text format, or OpenMetrics when asked\n"
		"\n"
		"Other:\n"
		"  --host NAME         the host name written with every event (default: this\n"
		"                      machine's, from gethostname(); at most 64 bytes); events\n"
		"                      that carry their own (replay) keep it\n"
		"  -q, --quiet         only warnings and errors on stderr\n"
		"  -v, --verbose       debug messages too\n"
		"  -h, --help          this text\n"
		"  -V, --version       version and plugin ABI version\n"
		"\n"
		"Stops on SIGINT or SIGTERM: stops reading, delivers what was read to every sink,\n"
		"closes the plugins and exits 128+signal (130, 143); a second signal exits at\n"
		"once.  SIGHUP makes the sinks reopen their files by name (jsonl: for logrotate).\n"
		"SIGUSR1 prints the counters.  Exit status 0 when the eventer's input\n"
		"ends, 1 when a plugin keeps failing, 2 for a usage or start-up error.\n"
		"\n"
		"Examples:\n"
		"  tcp-audit\n"
		"  tcp-audit --event bpf --sink jsonl -p path=/var/log/tcp-audit.jsonl\n"
		"  tcp-audit --event bpf --sink sqlite --sink pgsql -p conninfo='dbname=audit'\n"
		"  tcp-audit --event replay -p path=events.jsonl --sink sqlite -p path=events.db\n",
		DEFAULT_STATE_DIRECTORY, plugin_search_path(), DEFAULT_MAX_ERRORS,
		DEFAULT_BATCH_SIZE, DEFAULT_QUEUE_SIZE, DEFAULT_BACKLOG, DEFAULT_STATE_DIRECTORY,
		DEFAULT_STOP_GRACE_S);
}

__attribute__((format(printf, 1, 2))) static int usage_error(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_line(TCP_AUDIT_LOG_ERROR, "", fmt, ap);
	va_end(ap);
	return EXIT_USAGE;
}

static int parse_long(const char *opt, const char *v, long min, long max, long *out)
{
	char *end;

	errno = 0;
	long x = strtol(v, &end, 10);
	if (!*v || *end || errno || x < min || x > max)
		return usage_error("%s: \"%s\" is not a number from %ld to %ld", opt, v, min, max);
	*out = x;
	return 0;
}

static int parse_cli(int argc, char **argv, struct cli *cli)
{
	enum {
		OPT_EVENT = 256,
		OPT_SINK,
		OPT_LIST,
		OPT_MAX_ERRORS,
		OPT_QUEUE,
		OPT_BATCH,
		OPT_BACKLOG,
		OPT_SPOOL,
		OPT_SPOOL_SIZE,
		OPT_SPOOL_ON_FULL,
		OPT_STOP_GRACE,
		OPT_USER,
		OPT_METRICS,
		OPT_SEAL,
		OPT_HOST,
	};
	static const struct option longopts[] = {
		{"event", required_argument, NULL, OPT_EVENT},
		{"sink", required_argument, NULL, OPT_SINK},
		{"param", required_argument, NULL, 'p'},
		{"list-plugins", no_argument, NULL, OPT_LIST},
		{"max-errors", required_argument, NULL, OPT_MAX_ERRORS},
		{"queue-size", required_argument, NULL, OPT_QUEUE},
		{"batch-size", required_argument, NULL, OPT_BATCH},
		{"backlog", required_argument, NULL, OPT_BACKLOG},
		{"spool", required_argument, NULL, OPT_SPOOL},
		{"spool-size", required_argument, NULL, OPT_SPOOL_SIZE},
		{"spool-on-full", required_argument, NULL, OPT_SPOOL_ON_FULL},
		{"stop-grace", required_argument, NULL, OPT_STOP_GRACE},
		{"user", required_argument, NULL, OPT_USER},
		{"metrics", required_argument, NULL, OPT_METRICS},
		{"seal", required_argument, NULL, OPT_SEAL},
		{"host", required_argument, NULL, OPT_HOST},
		{"quiet", no_argument, NULL, 'q'},
		{"verbose", no_argument, NULL, 'v'},
		{"help", no_argument, NULL, 'h'},
		{"version", no_argument, NULL, 'V'},
		{NULL, 0, NULL, 0},
	};
	struct instance *last = NULL;
	int c, r;

	cli->max_errors = DEFAULT_MAX_ERRORS;
	cli->queue_size = DEFAULT_QUEUE_SIZE;
	cli->batch_size = DEFAULT_BATCH_SIZE;
	cli->backlog = DEFAULT_BACKLOG;
	cli->spool_size = DEFAULT_SPOOL_SIZE;
	cli->spool_on_full = SPOOL_BLOCK;
	cli->stop_grace = DEFAULT_STOP_GRACE_S;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+p:qvhV", longopts, NULL)) != -1) {
		switch (c) {
		case OPT_EVENT:
			if (cli->event_given)
				return usage_error("--event given twice: tcp-audit reads from one "
						   "eventer");
			cli->event_given = true;
			cli->event.spec = optarg;
			cli->event.kind = TCP_AUDIT_EVENTER;
			last = &cli->event;
			break;
		case OPT_SINK:
			if (cli->n_sinks == MAX_SINKS)
				return usage_error("more than %d --sink", MAX_SINKS);
			last = &cli->sinks[cli->n_sinks++];
			last->spec = optarg;
			last->kind = TCP_AUDIT_SINKER;
			break;
		case 'p':
			if (!last)
				return usage_error("-p %s: put -p after the --event or --sink it is for",
						   optarg);
			if (last->n_args == MAX_PARAMS)
				return usage_error("more than %d -p for %s", MAX_PARAMS, last->spec);
			if (option_arg_split(optarg, &last->args[last->n_args]))
				return usage_error("-p \"%s\": expected KEY=VALUE", optarg);
			last->n_args++;
			break;
		case OPT_LIST:
			cli->list_plugins = true;
			break;
		case OPT_MAX_ERRORS:
			if ((r = parse_long("--max-errors", optarg, 1, 1000000, &cli->max_errors)))
				return r;
			break;
		case OPT_QUEUE:
			if ((r = parse_long("--queue-size", optarg, 16, 1 << 26, &cli->queue_size)))
				return r;
			cli->memory_tuned = "--queue-size";
			break;
		case OPT_BATCH:
			if ((r = parse_long("--batch-size", optarg, 1, 1 << 20, &cli->batch_size)))
				return r;
			break;
		case OPT_BACKLOG:
			if ((r = parse_long("--backlog", optarg, 0, 1l << 26, &cli->backlog)))
				return r;
			cli->memory_tuned = "--backlog";
			break;
		case OPT_SPOOL:
			if (!*optarg)
				return usage_error("--spool: give a directory, or none");
			cli->spool_dir = optarg;
			break;
		case OPT_SPOOL_SIZE:
			cli->spool_tuned = true;
			if (option_parse_size(optarg, &cli->spool_size) < 0 ||
			    cli->spool_size < SPOOL_MIN_BYTES)
				return usage_error("--spool-size: \"%s\" is not a size of at least 1M "
						   "(digits with K, M, G or T)",
						   optarg);
			break;
		case OPT_SPOOL_ON_FULL:
			cli->spool_tuned = true;
			if (strcmp(optarg, "block") == 0)
				cli->spool_on_full = SPOOL_BLOCK;
			else if (strcmp(optarg, "drop_oldest") == 0)
				cli->spool_on_full = SPOOL_DROP_OLDEST;
			else
				return usage_error("--spool-on-full: \"%s\" is not block or drop_oldest",
						   optarg);
			break;
		case OPT_USER:
			if (!*optarg)
				return usage_error("--user: give a user name");
			cli->user = optarg;
			break;
		case OPT_HOST:
			if (!*optarg || strlen(optarg) > TCP_AUDIT_HOST_LEN - 16)
				return usage_error("--host: give a name of 1 to %d bytes",
						   TCP_AUDIT_HOST_LEN - 16);
			for (const char *h = optarg; *h; h++)
				if ((unsigned char)*h < 0x20 || *h == 0x7f)
					return usage_error("--host: \"%s\" holds a control character",
							   optarg);
			cli->host = optarg;
			break;
		case OPT_METRICS:
			if (!*optarg)
				return usage_error("--metrics: give HOST:PORT, e.g. 127.0.0.1:9464");
			cli->metrics = optarg;
			break;
		case OPT_SEAL:
			if (!*optarg)
				return usage_error("--seal: give the key file (made by tcp-audit "
						   "seal-init)");
			cli->seal = optarg;
			break;
		case OPT_STOP_GRACE:
			if ((r = parse_long("--stop-grace", optarg, 0, 86400, &cli->stop_grace)))
				return r;
			break;
		case 'q':
			log_max_level = TCP_AUDIT_LOG_WARNING;
			break;
		case 'v':
			log_max_level = TCP_AUDIT_LOG_DEBUG;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		case 'V':
			printf("tcp-audit %s (plugin ABI %u)\n", TCP_AUDIT_VERSION,
			       TCP_AUDIT_ABI_VERSION);
			exit(0);
		case ':':
			return usage_error("%s needs a value (see tcp-audit --help)", argv[optind - 1]);
		default:
			if (optopt)
				return usage_error("unknown option -%c (see tcp-audit --help)", optopt);
			return usage_error("unknown option %s (see tcp-audit --help)",
					   argv[optind - 1]);
		}
	}
	if (optind < argc)
		return usage_error("unexpected argument \"%s\" (see tcp-audit --help)", argv[optind]);
	if (cli->spool_dir && strcmp(cli->spool_dir, "none") == 0) {
		if (cli->spool_tuned)
			return usage_error("--spool-size and --spool-on-full need a spool, not --spool "
					   "none");
		cli->spool_dir = NULL;
		cli->no_spool = true;
	}
	return 0;
}

/* Parses inst's options into a fresh config for its loaded plugin. */
static int configure_instance(struct instance *inst, bool skip_unknown)
{
	char err[1024];
	const struct tcp_audit_plugin *d = inst->lp.desc;

	inst->config = calloc(1, d->config_size ? d->config_size : 1);
	if (!inst->config)
		return usage_error("out of memory");
	if (options_apply(d, inst->args, inst->n_args, skip_unknown, inst->config, err,
			  sizeof(err)) < 0)
		return usage_error("%s %s: %s", inst->kind == TCP_AUDIT_EVENTER ? "--event" : "--sink",
				   inst->spec, err);
	return 0;
}

/* Loads inst->spec and parses its options. */
static int load_instance(struct instance *inst)
{
	char err[1024];

	if (plugin_load(inst->spec, inst->kind, &inst->lp, err, sizeof(err)) < 0)
		return usage_error("%s %s: %s", inst->kind == TCP_AUDIT_EVENTER ? "--event" : "--sink",
				   inst->spec, err);
	return configure_instance(inst, false);
}

static void unload_instance(struct instance *inst)
{
	free(inst->config);
	inst->config = NULL;
	plugin_unload(&inst->lp);
}

static int open_instance(struct instance *inst)
{
	const struct tcp_audit_plugin *d = inst->lp.desc;
	int r;

	plugin_logger_init(&inst->logger, inst->kind == TCP_AUDIT_EVENTER ? "event" : "sink",
			   inst->label);
	if (inst->kind == TCP_AUDIT_EVENTER)
		r = d->eventer_open(&inst->self, inst->config, &inst->logger.host);
	else
		r = d->sinker_open(&inst->self, inst->config, &inst->logger.host);
	if (r < 0)
		inst->self = NULL;
	return r;
}

static void close_sink(struct instance *inst)
{
	if (inst->self)
		inst->lp.desc->sinker_close(inst->self);
	inst->self = NULL;
}

/*
 * --event auto: the first candidate that loads, accepts the options and
 * opens.  Each -p key must be known to at least one candidate; a candidate
 * gets the keys it knows.
 */
static int open_auto_eventer(struct instance *ev)
{
	bool known[MAX_PARAMS] = {false};
	char reasons[1024] = "", err[512];
	size_t n_loaded = 0;
	int r;

	for (size_t i = 0; i < N_AUTO; i++) {
		struct loaded_plugin lp;
		if (plugin_load(auto_candidates[i], TCP_AUDIT_EVENTER, &lp, err, sizeof(err)) < 0) {
			snprintf(reasons + strlen(reasons), sizeof(reasons) - strlen(reasons),
				 "%s%s: %s", i ? "; " : "", auto_candidates[i], err);
			continue;
		}
		n_loaded++;
		for (size_t a = 0; a < ev->n_args; a++)
			if (option_find(lp.desc->options, ev->args[a].key, ev->args[a].key_len))
				known[a] = true;
		plugin_unload(&lp);
	}
	if (n_loaded == 0)
		return usage_error("--event auto: no eventer could be loaded (%s)", reasons);
	for (size_t a = 0; a < ev->n_args; a++)
		if (!known[a])
			return usage_error("--event auto: unknown option \"%.*s\" (see tcp-audit "
					   "--list-plugins)",
					   (int)ev->args[a].key_len, ev->args[a].key);

	for (size_t i = 0; i < N_AUTO; i++) {
		ev->spec = auto_candidates[i];
		if (plugin_load(ev->spec, TCP_AUDIT_EVENTER, &ev->lp, err, sizeof(err)) < 0)
			continue;
		r = configure_instance(ev, true);
		if (r)
			return r;
		snprintf(ev->label, sizeof(ev->label), "%s", ev->lp.desc->name);
		r = open_instance(ev);
		if (r == 0) {
			log_info("--event auto: using %s", ev->label);
			return 0;
		}
		log_info("--event auto: %s cannot be used (%s)%s", ev->label,
			 r > -4096 ? strerror(-r) : "error", i + 1 < N_AUTO ? ", trying the next" : "");
		unload_instance(ev);
	}
	return usage_error("--event auto: no eventer could be opened (see the messages above)");
}

static void list_plugins(void)
{
	const char *dirs = plugin_search_path();
	int found = 0;

	printf("Plugin directories: %s\n", dirs);
	printf("\neventer auto\n    bpf if it loads and attaches, else tracefs\n");
	for (int kind = TCP_AUDIT_EVENTER; kind <= TCP_AUDIT_SINKER; kind++) {
		const char *suffix = kind == TCP_AUDIT_EVENTER ? "-eventer.so" : "-sink.so";
		for (const char *d = dirs; *d;) {
			const char *colon = strchr(d, ':');
			size_t len = colon ? (size_t)(colon - d) : strlen(d);
			char dir[4096];
			snprintf(dir, sizeof(dir), "%.*s", (int)len, d);
			DIR *dp = len ? opendir(dir) : NULL;
			struct dirent *de;
			while (dp && (de = readdir(dp))) {
				size_t n = strlen(de->d_name), sl = strlen(suffix);
				if (n <= sl + 10 || strncmp(de->d_name, "tcp-audit-", 10) ||
				    strcmp(de->d_name + n - sl, suffix))
					continue;
				char path[8192], err[1024];
				struct loaded_plugin lp;
				snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
				found++;
				if (plugin_load(path, kind, &lp, err, sizeof(err)) < 0) {
					printf("\n%s: cannot be loaded: %s\n", path, err);
					continue;
				}
				const struct tcp_audit_plugin *p = lp.desc;
				printf("\n%s %s\n    %s\n", plugin_kind_word(p->kind), p->name,
				       p->description ? p->description : "");
				for (const struct tcp_audit_option *o = p->options; o && o->key; o++) {
					printf("    -p %s=<%s>%s%s%s%s\n        %s\n", o->key,
					       option_type_name(o), o->required ? "  (required)" : "",
					       o->def ? "  (default: " : "", o->def ? o->def : "",
					       o->def ? ")" : "", o->help ? o->help : "");
				}
				plugin_unload(&lp);
			}
			if (dp)
				closedir(dp);
			if (!colon)
				break;
			d = colon + 1;
		}
	}
	if (!found)
		printf("\nNo plugin files found.\n");
}

static void print_counters(struct pipeline *p, const char *what)
{
	struct pipeline_stats *st = pipeline_stats(p);

	if (!st)
		return;
	log_always("%s: events read %llu, lost in kernel %llu, lost in queue %llu, lost in spool "
		   "%llu, skipped input %llu, gap records %llu, backlog peak %llu, spool bytes %llu",
		   what, (unsigned long long)st->read, (unsigned long long)st->lost_kernel,
		   (unsigned long long)st->lost_queue, (unsigned long long)st->lost_spool,
		   (unsigned long long)st->skipped_input, (unsigned long long)st->gap_records,
		   (unsigned long long)st->backlog_peak, (unsigned long long)st->spool_bytes);
	for (size_t i = 0; i < st->n_sinks; i++) {
		const struct pipeline_sink_stats *k = &st->sinks[i];
		char sealing[64] = "";
		if (k->seals) /* --seal: what sealing costs, measured as it runs */
			snprintf(sealing, sizeof(sealing), ", seals %llu (%.3f s CPU)",
				 (unsigned long long)k->seals, (double)k->seal_cpu_ns / 1e9);
		log_always("%s: sink %s: written %llu, undelivered %llu%s%s", what, k->label,
			   (unsigned long long)k->written, (unsigned long long)k->undelivered,
			   sealing,
			   k->failed	      ? " (failed)"
			   : k->left_in_spool ? " (kept in the spool)"
					      : "");
	}
	free(st);
}

/* Labels sinks by plugin name, numbering names that repeat ("jsonl#2"). */
static void label_sinks(struct cli *cli)
{
	for (size_t i = 0; i < cli->n_sinks; i++) {
		const char *name = cli->sinks[i].lp.desc->name;
		int same = 0, index = 0;
		for (size_t j = 0; j < cli->n_sinks; j++)
			if (strcmp(cli->sinks[j].lp.desc->name, name) == 0) {
				same++;
				if (j <= i)
					index++;
			}
		if (same > 1)
			snprintf(cli->sinks[i].label, sizeof(cli->sinks[i].label), "%s#%d", name,
				 index);
		else
			snprintf(cli->sinks[i].label, sizeof(cli->sinks[i].label), "%s", name);
	}
}

/* No --sink: sqlite, or JSON lines on stdout if sqlite is not installed. */
static int add_default_sinks(struct cli *cli)
{
	struct loaded_plugin lp;
	char err[512];
	static char jsonl_stdout[] = "path=-";

	if (plugin_load("sqlite", TCP_AUDIT_SINKER, &lp, err, sizeof(err)) == 0) {
		plugin_unload(&lp);
		cli->sinks[cli->n_sinks].spec = "sqlite";
	} else {
		log_warning("the sqlite sink is not available (%s): writing JSON lines to stdout",
			    err);
		cli->sinks[cli->n_sinks].spec = "jsonl";
		option_arg_split(jsonl_stdout, &cli->sinks[cli->n_sinks].args[0]);
		cli->sinks[cli->n_sinks].n_args = 1;
	}
	cli->sinks[cli->n_sinks++].kind = TCP_AUDIT_SINKER;
	if (isatty(STDOUT_FILENO) && strcmp(cli->sinks[0].spec, "jsonl") != 0) {
		cli->sinks[cli->n_sinks].spec = "console";
		cli->sinks[cli->n_sinks++].kind = TCP_AUDIT_SINKER;
	}
	return 0;
}

static int open_sinks(struct cli *cli)
{
	for (size_t i = 0; i < cli->n_sinks; i++) {
		int r = open_instance(&cli->sinks[i]);
		if (r < 0) {
			if (!cli->sinks[i].logger.errors) /* else it said why itself */
				log_error("--sink %s: cannot open the sink (%s)", cli->sinks[i].spec,
					  r > -4096 ? strerror(-r) : "error");
			return EXIT_USAGE;
		}
	}
	return 0;
}

/*
 * --seal: the key file is read and moved on by the user the sinks run as
 * (it is rewritten every interval), before any sink is opened.
 */
static int open_sealer(struct cli *cli, struct sealer **sealer)
{
	char err[1024];

	if (cli->seal && sealer_open(sealer, cli->seal, err, sizeof(err)) < 0)
		return usage_error("--seal %s", err);
	return 0;
}

static int open_eventer(struct cli *cli, bool is_auto)
{
	int r;

	if (is_auto)
		return open_auto_eventer(&cli->event);
	snprintf(cli->event.label, sizeof(cli->event.label), "%s", cli->event.lp.desc->name);
	r = open_instance(&cli->event);
	if (r < 0) {
		if (!cli->event.logger.errors)
			log_error("--event %s: cannot open the eventer (%s)", cli->event.spec,
				  r > -4096 ? strerror(-r) : "error");
		return EXIT_USAGE;
	}
	return 0;
}

/* After the eventer is open: only what it asked for is kept. */
static int drop_privileges(struct cli *cli)
{
	char err[512], names[256];
	uint64_t kept;

	if (privileges_drop(cli->user, cli->event.logger.keep_caps, &kept, err, sizeof(err)) < 0)
		return usage_error("%s", err);
	capability_names(kept, names, sizeof(names));
	if (cli->user)
		log_info("running as user %s (uid %u), capabilities kept: %s", cli->user,
			 (unsigned)getuid(), names);
	else
		log_info("capabilities kept after opening %s: %s", cli->event.label, names);
	return 0;
}

/*
 * Without --spool, the default spool in the state folder, so that memory does
 * not grow with a burst and a kill -9 loses nothing; but not for an eventer
 * that reads a file: its input is durable already, and with no spool a slow
 * sink makes reading wait rather than lose.
 */
static int choose_spool(struct cli *cli, bool is_auto)
{
	const struct tcp_audit_plugin *d = is_auto ? NULL : cli->event.lp.desc;

	if (cli->spool_dir && cli->memory_tuned)
		return usage_error("%s sizes the in-memory pipeline, which a spool replaces: give "
				   "--spool none to use it",
				   cli->memory_tuned);
	if (cli->spool_dir || cli->no_spool)
		return 0;
	if (d && TCP_AUDIT_PLUGIN_HAS(d, flags) && (d->flags & TCP_AUDIT_PLUGIN_REREADABLE_INPUT)) {
		if (cli->spool_tuned)
			return usage_error("--spool-size and --spool-on-full: eventer %s reads a "
					   "file and has no spool unless --spool DIR is given",
					   d->name);
		if (!cli->memory_tuned) /* reading waits for the sinks: no events pile up */
			cli->backlog = 0;
		return 0;
	}
	if (cli->memory_tuned)
		return usage_error("%s sizes the in-memory pipeline, which the default spool "
				   "replaces: give --spool none to use it",
				   cli->memory_tuned);
	if (state_path("spool", cli->default_spool, sizeof(cli->default_spool)) < 0)
		return usage_error("$STATE_DIRECTORY is too long");
	cli->spool_dir = cli->default_spool;
	return 0;
}

/*
 * --user with the default spool: a state directory that does not exist yet
 * is made here, as root, and given to the user (as systemd gives a unit's
 * StateDirectory= to its User=).  One that exists is left as it is.
 */
static int prepare_state_directory(struct cli *cli)
{
	char dir[PATH_MAX];
	struct stat st;
	struct passwd *pw;

	if (!cli->user || cli->spool_dir != cli->default_spool)
		return 0;
	if (state_path(NULL, dir, sizeof(dir)) < 0 || stat(dir, &st) == 0 ||
	    !(pw = getpwnam(cli->user)))
		return 0; /* an unknown user is reported when privileges are dropped */
	if (mkdir(dir, 0750) < 0 || chown(dir, pw->pw_uid, pw->pw_gid) < 0)
		return usage_error("cannot make %s for user %s (the default spool): %s", dir,
				   cli->user, strerror(errno));
	return 0;
}

static int open_spool(struct cli *cli, const struct origin *origin, struct spool **spool)
{
	const char *labels[MAX_SINKS];
	char err[1024];
	int r;

	if (cli->spool_dir == cli->default_spool && (r = make_state_directory()) < 0) {
		char dir[PATH_MAX];
		state_path(NULL, dir, sizeof(dir));
		return usage_error("cannot create %s for the default spool: %s (give --spool DIR, "
				   "or --spool none)",
				   dir, strerror(-r));
	}
	for (size_t i = 0; i < cli->n_sinks; i++)
		labels[i] = cli->sinks[i].label;
	struct spool_config sc = {.dir = cli->spool_dir,
				  .origin = origin,
				  .max_bytes = cli->spool_size,
				  .on_full = cli->spool_on_full};
	if (spool_open(spool, &sc, labels, cli->n_sinks, err, sizeof(err)) < 0)
		return usage_error("--spool: %s%s", err,
				   cli->spool_dir == cli->default_spool
					   ? " (the default spool: give --spool DIR, or --spool none)"
					   : "");
	uint64_t lost = spool_lost(*spool);
	if (lost)
		log_warning("spool: %llu events in %s are lost to damage (see above); each sink "
			    "that misses them gets a gap record in their place",
			    (unsigned long long)lost, cli->spool_dir);
	return 0;
}

/*
 * The stop signals are blocked in every thread and taken by sigtimedwait().
 * A handler is installed too: a signal inherited as ignored (a shell's
 * background job ignores SIGINT) is then still taken, and where a signal
 * reaches a thread after all (valgrind routes signals itself) it is noted
 * here instead of ending the process by its default action.
 */
static volatile sig_atomic_t handled_signal;

static void note_signal(int sig)
{
	handled_signal = sig;
}

/*
 * The pipeline's reader wakes the main thread with this signal (one of the
 * taken ones) when reading ends, so that an input's end is seen at once
 * rather than at the next tick.  Where it reaches a handler instead (valgrind),
 * the end is seen at the tick.
 */
static pthread_t main_thread;

static int wake_signal(void)
{
	return SIGRTMIN;
}

static void wake_main(void *arg)
{
	(void)arg;
	pthread_kill(main_thread, wake_signal());
}

static void ignore_signal(int sig)
{
	(void)sig;
}

static int run(struct cli *cli)
{
	struct pipeline_stage sinks[MAX_SINKS], eventer;
	struct pipeline *p = NULL;
	struct spool *spool = NULL;
	struct metrics *metrics = NULL;
	struct sealer *sealer = NULL;
	bool sealed_to_the_end = false, ran = false;
	sigset_t set;
	int stop_signal = 0, r, status = 0, metrics_fd = -1;
	char metrics_at[128] = "";
	struct origin origin;

	/* 1. load and check everything */
	if (!cli->event_given) {
		cli->event.spec = "auto";
		cli->event.kind = TCP_AUDIT_EVENTER;
	}
	if (cli->n_sinks == 0 && (r = add_default_sinks(cli)))
		return r;
	bool is_auto = strcmp(cli->event.spec, "auto") == 0;
	if (!is_auto && (r = load_instance(&cli->event)))
		return r;
	for (size_t i = 0; i < cli->n_sinks; i++)
		if ((r = load_instance(&cli->sinks[i])))
			return r;
	label_sinks(cli);
	for (size_t i = 0; cli->seal && i < cli->n_sinks; i++) {
		const struct tcp_audit_plugin *d = cli->sinks[i].lp.desc;
		if (!TCP_AUDIT_PLUGIN_HAS(d, sinker_write_sealed) || !d->sinker_write_sealed)
			return usage_error("--seal: sink %s cannot store seals", cli->sinks[i].label);
	}
	if ((r = choose_spool(cli, is_auto)))
		return r;
	origin_init(&origin, cli->host);
	if (cli->metrics) { /* now, while any port may be bound */
		char err[512];
		metrics_fd = metrics_listen(cli->metrics, metrics_at, sizeof(metrics_at), err,
					    sizeof(err));
		if (metrics_fd < 0)
			return usage_error("--metrics %s", err);
	}

	/*
	 * 2. open.  The eventer needs root; once it is open only the capabilities
	 * it asked for are kept.  With --user the sinks and the spool are opened
	 * after the switch, as that user (their files are the user's); without,
	 * the sinks are opened first, with root's access to the paths given.
	 * Nothing is read before everything is open.
	 */
	if (!cli->user && ((status = open_sealer(cli, &sealer)) || (status = open_sinks(cli))))
		goto close_all;
	if ((status = prepare_state_directory(cli)) || (status = open_eventer(cli, is_auto)))
		goto close_all;
	if ((status = drop_privileges(cli)))
		goto close_all;
	if (cli->user && ((status = open_sealer(cli, &sealer)) || (status = open_sinks(cli))))
		goto close_all;
	if (cli->spool_dir && (status = open_spool(cli, &origin, &spool)))
		goto close_all;

	/* 3. run; signals are taken synchronously by this thread only */
	static const int taken[] = {SIGINT, SIGTERM, SIGHUP, SIGUSR1};
	struct sigaction sa = {.sa_handler = note_signal};
	sigemptyset(&sa.sa_mask);
	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(taken) / sizeof(taken[0]); i++) {
		sigaddset(&set, taken[i]);
		sigaction(taken[i], &sa, NULL);
	}
	struct sigaction ignore = {.sa_handler = ignore_signal};
	sigemptyset(&ignore.sa_mask);
	sigaction(wake_signal(), &ignore, NULL);
	sigaddset(&set, wake_signal());
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	main_thread = pthread_self();

	struct pipeline_config cfg = {
		.queue_size = (size_t)cli->queue_size,
		.batch_size = (size_t)cli->batch_size,
		.max_backlog = (uint64_t)cli->backlog,
		.max_errors = (int)cli->max_errors,
		.origin = &origin,
		.spool = spool,
		.stop_grace_ms = (int)cli->stop_grace * 1000,
		.sealer = sealer,
		.reading_ended = wake_main,
	};
	eventer = (struct pipeline_stage){cli->event.lp.desc, cli->event.self, &cli->event.logger,
					  cli->event.label};
	char names[512] = "";
	for (size_t i = 0; i < cli->n_sinks; i++) {
		sinks[i] = (struct pipeline_stage){cli->sinks[i].lp.desc, cli->sinks[i].self,
						   &cli->sinks[i].logger, cli->sinks[i].label};
		snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
			 i ? ", " : "", cli->sinks[i].label);
	}
	r = pipeline_start(&p, &cfg, &eventer, sinks, cli->n_sinks);
	if (r < 0) {
		log_error("cannot start: %s", strerror(-r));
		status = 1;
		goto close_all;
	}
	cli->event.self = NULL; /* the pipeline's now */
	ran = true;
	if (metrics_fd >= 0) {
		char err[512];
		metrics = metrics_start(metrics_fd, p, cli->event.label, err, sizeof(err));
		metrics_fd = -1; /* the server's, or closed */
		if (!metrics) {
			log_error("--metrics: %s: stopping", err);
			pipeline_stop(p);
			enum pipeline_end ignored;
			while (!pipeline_wait(p, 1000, &ignored))
				;
			pipeline_free(p);
			status = 1;
			goto close_all;
		}
		log_info("metrics: serving http://%s/metrics", metrics_at);
	}
	log_info("started: eventer %s, sink%s %s", cli->event.label, cli->n_sinks > 1 ? "s" : "",
		 names);
	int tick_ms = notify_init(200);
	notify_ready(p);

	enum pipeline_end end = PIPELINE_RUNNING;
	bool abandoned = false;
	for (;;) {
		/*
		 * Once the input has ended or a stop is under way, the end is
		 * waited for (signals looked at between waits) rather than seen
		 * at the next tick: a replay's end is not up to a tick late.
		 */
		bool finishing = end == PIPELINE_END_OF_STREAM || end == PIPELINE_STOPPED;
		struct timespec tick = {tick_ms / 1000, (long)(tick_ms % 1000) * 1000000L};
		if (finishing)
			tick = (struct timespec){0, 0};
		int sig = sigtimedwait(&set, NULL, &tick);
		if (sig <= 0 && handled_signal) {
			sig = handled_signal;
			handled_signal = 0;
		}
		if (sig == wake_signal()) {
			/* reading ended: pipeline_wait() below says how */
		} else if (sig == SIGUSR1) {
			print_counters(p, "counters");
		} else if (sig == SIGHUP) {
			log_info("got SIGHUP: the sinks reopen their files");
			pipeline_reopen(p);
		} else if (sig > 0 && !stop_signal) {
			stop_signal = sig;
			notify_stopping();
			log_info("got SIG%s: stopping; delivering what was read (send it again to "
				 "exit at once)",
				 sigabbrev_np(sig) ? sigabbrev_np(sig) : "?");
			pipeline_stop(p);
		} else if (sig > 0 && !abandoned) {
			log_warning("got a second signal: exiting without waiting for the sinks");
			pipeline_abandon(p);
			abandoned = true;
			if (!pipeline_wait(p, 3000, &end)) {
				print_counters(p, "summary");
				_exit(128 + stop_signal);
			}
		}
		if (pipeline_wait(p, finishing ? tick_ms : 0, &end))
			break;
		notify_tick(p);
		if (sealer)
			sealer_tick(sealer);
	}
	notify_stopping();
	print_counters(p, "summary");
	if (sealer) {
		struct pipeline_stats *st = pipeline_stats(p);
		sealed_to_the_end = st && end != PIPELINE_FAILED;
		for (size_t i = 0; st && i < st->n_sinks; i++)
			sealed_to_the_end = sealed_to_the_end && st->sinks[i].sealed_to_the_end;
		free(st);
	}
	metrics_stop(metrics);
	pipeline_free(p);

	if (end == PIPELINE_FAILED)
		status = 1;
	else if (stop_signal)
		status = 128 + stop_signal;
	else
		status = 0;

close_all:
	if (metrics_fd >= 0)
		close(metrics_fd);
	if (cli->event.self)
		cli->event.lp.desc->eventer_close(cli->event.self);
	cli->event.self = NULL;
	for (size_t i = 0; i < cli->n_sinks; i++)
		close_sink(&cli->sinks[i]);
	spool_close(spool);
	if (sealer) {
		if (ran && !sealed_to_the_end)
			log_warning("--seal: not every sink stored its closing seal: tcp-audit verify "
				    "will report this run's end as not closed");
		sealer_close(sealer, sealed_to_the_end || !ran); /* no run, no chain to end */
	}
	return status;
}

int main(int argc, char **argv)
{
	struct cli *cli = calloc(1, sizeof(*cli));
	int status;

	if (!cli)
		return 1;
	signal(SIGPIPE, SIG_IGN); /* a closed pipe is a write error, not death */
	log_init();
	if (argc > 1 && strcmp(argv[1], "seal-init") == 0) {
		free(cli);
		return seal_init_main(argc - 1, argv + 1);
	}
	if (argc > 1 && strcmp(argv[1], "verify") == 0) {
		free(cli);
		return verify_main(argc - 1, argv + 1);
	}
	if (argc > 1 && strcmp(argv[1], "report") == 0) {
		free(cli);
		return report_main(argc - 1, argv + 1);
	}
	status = parse_cli(argc, argv, cli);
	if (status == 0) {
		if (cli->list_plugins)
			list_plugins();
		else
			status = run(cli);
	}
	unload_instance(&cli->event);
	for (size_t i = 0; i < cli->n_sinks; i++)
		unload_instance(&cli->sinks[i]);
	free(cli);
	return status;
}
