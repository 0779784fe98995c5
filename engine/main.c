/*
 * main.c -- the wallaroo-engine command line.
 */
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "engine.h"
#include "log.h"
#include "topology.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: wallaroo-engine --topology FILE [--state-dir DIR [--checkpoint-interval S]]\n"
	    "                       [--name NAME]\n"
	    "       wallaroo-engine --check-config FILE\n"
	    "       wallaroo-engine --help | --version\n"
	    "\n"
	    "Runs the application described by the topology file: spawns its\n"
	    "runner programs, reads its sources, writes its sinks. Logs go to\n"
	    "stderr, one line per event with a stable tag; a READY line says the\n"
	    "engine accepts work. When every source has ended (file sources) or\n"
	    "on SIGTERM, it drains, prints SUMMARY lines on stdout and exits\n"
	    "(a second SIGTERM stops at once, abandoning what is queued).\n"
	    "\n"
	    "  --topology FILE     the application (docs/topology.md)\n"
	    "  --check-config FILE validate FILE, print the resolved plan, start nothing\n"
	    "  --state-dir DIR     checkpoint to DIR (created if missing) and recover\n"
	    "                      from it on start: exactly-once results across crashes\n"
	    "                      (one engine per DIR at a time)\n"
	    "  --checkpoint-interval S\n"
	    "                      seconds between checkpoints (default 1)\n"
	    "  --name NAME         worker name in logs and the handshake (default: worker)\n"
	    "  --help              this text\n"
	    "  --version           the engine and protocol versions\n"
	    "\n"
	    "Exit codes: 0 done and drained, 1 runtime failure, 2 bad command line,\n"
	    "3 invalid topology.\n");
}

/*
 * Loads FILE into *t (the caller frees it), logging why not: the topology
 * code prints the problems in the file, this says what became of it. Out
 * of memory has no such lines, so it is named here.
 */
static bool
load(wl_topology **t, const char *file)
{
	wl_err rv = wl_topology_load(t, file, stderr);

	if (rv == WL_OK) {
		return (true);
	}
	if (rv == WL_ERR_NOMEM) {
		wl_log("TOPO-ERROR", "out of memory while loading %s", file);
	} else {
		wl_log("TOPO-ERROR", "%s is invalid (see the lines above)",
		    file);
	}
	return (false);
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "topology", required_argument, NULL, 't' },
		{ "check-config", required_argument, NULL, 'c' },
		{ "state-dir", required_argument, NULL, 's' },
		{ "name", required_argument, NULL, 'n' },
		{ "checkpoint-interval", required_argument, NULL, 'i' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	const char *topo = NULL, *check = NULL;
	wl_engine_opts eo = { .name = "worker", .state_dir = NULL,
	    .checkpoint_interval = 1.0 };
	char *end;
	wl_topology *t = NULL;
	int c, rc;

	while ((c = getopt_long(argc, argv, "t:c:s:n:hV", opts, NULL)) != -1) {
		switch (c) {
		case 't': topo = optarg; break;
		case 'c': check = optarg; break;
		case 's': eo.state_dir = optarg; break;
		case 'n': eo.name = optarg; break;
		case 'i':
			eo.checkpoint_interval = strtod(optarg, &end);
			if (end == optarg || *end != '\0' ||
			    !(eo.checkpoint_interval >= 0.01 &&
			    eo.checkpoint_interval <= 3600)) {
				fprintf(stderr, "wallaroo-engine: --checkpoint-interval "
				    "'%s': seconds from 0.01 to 3600\n", optarg);
				return WL_EXIT_USAGE;
			}
			break;
		case 'h': usage(stdout); return WL_EXIT_OK;
		case 'V':
			printf("wallaroo-engine %s (protocol 1.0)\n", PACKAGE_VERSION);
			return WL_EXIT_OK;
		default:
			usage(stderr);
			return WL_EXIT_USAGE;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "wallaroo-engine: unexpected argument '%s'\n",
		    argv[optind]);
		usage(stderr);
		return WL_EXIT_USAGE;
	}
	if ((topo == NULL) == (check == NULL)) {
		fprintf(stderr, "wallaroo-engine: give exactly one of --topology "
		    "or --check-config\n");
		usage(stderr);
		return WL_EXIT_USAGE;
	}
	wl_log_set_name(eo.name);
	if (check != NULL) {
		if (!load(&t, check)) {
			return WL_EXIT_CONFIG;
		}
		wl_topology_print(t, stdout);
		wl_topology_free(t);
		return WL_EXIT_OK;
	}
	if (!load(&t, topo)) {
		return WL_EXIT_CONFIG;
	}
	rc = wl_engine_run(t, &eo);
	wl_topology_free(t);
	return rc;
}
