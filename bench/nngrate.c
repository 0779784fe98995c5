/*
 * nngrate.c -- the raw nng message rate between two processes, the ceiling
 * the engine's runner link works under (bench/README.md, "batching curve").
 *
 * The same transport as the link: a pair1 socket over ipc:// in a private
 * directory, a forked child at the other end. Two figures:
 *
 *   stream    the parent sends --size byte messages as fast as nng takes
 *             them, for --seconds; the child counts what it receives.
 *   pingpong  one message in flight: the parent sends, the child answers,
 *             the parent waits for the answer (a batch with an in-flight
 *             window of 1 pays this round trip per batch).
 *
 * Output: "NNGRATE stream size=S msgs_per_s=R" and
 * "NNGRATE pingpong size=S round_trips_per_s=R rtt_us=U".
 */
#include "hist.h"

#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/pair1/pair.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int
fail(const char *what, int rv)
{
	fprintf(stderr, "nngrate: %s: %s\n", what, nng_strerror(rv));
	return 1;
}

/* A pair1 socket with the link's settings: a receive limit and 64-message
 * buffers each way. */
static int
open_sock(nng_socket *s, size_t size)
{
	int rv;

	if ((rv = nng_pair1_open(s)) != 0)
		return fail("nng_pair1_open", rv);
	if ((rv = nng_socket_set_size(*s, NNG_OPT_RECVMAXSZ, size + 64)) != 0 ||
	    (rv = nng_socket_set_int(*s, NNG_OPT_RECVBUF, 64)) != 0 ||
	    (rv = nng_socket_set_int(*s, NNG_OPT_SENDBUF, 64)) != 0)
		return fail("nng_socket_set", rv);
	return 0;
}

/* Receives until a 1-byte message ends the phase: counts the messages into
 * *n, or with `echo` sends each one back. */
static int
drain(nng_socket s, int echo, uint64_t *n)
{
	int rv;

	for (;;) {
		nng_msg *m;

		if ((rv = nng_recvmsg(s, &m, 0)) != 0)
			return fail("nng_recvmsg", rv);
		if (nng_msg_len(m) == 1) {
			nng_msg_free(m);
			return 0;
		}
		(*n)++;
		if (!echo)
			nng_msg_free(m);
		else if ((rv = nng_sendmsg(s, m, 0)) != 0)
			return fail("nng_sendmsg", rv);
	}
}

/* The child: in the stream phase counts what it receives and reports the
 * count back; in the ping-pong phase echoes every message. */
static int
child(const char *url, size_t size)
{
	nng_socket s;
	uint64_t n = 0, echoed = 0;
	int rv;

	if (open_sock(&s, size))
		return 1;
	/* Non-blocking: nng redials in the background until the parent
	 * listens. */
	if ((rv = nng_dial(s, url, NULL, NNG_FLAG_NONBLOCK)) != 0)
		return fail("nng_dial", rv);
	if (drain(s, 0, &n))
		return 1;
	if ((rv = nng_send(s, &n, sizeof(n), 0)) != 0)
		return fail("nng_send", rv);
	if (drain(s, 1, &echoed))
		return 1;
	nng_close(s);
	return 0;
}

static int
send_size(nng_socket s, size_t size)
{
	nng_msg *m;
	int rv;

	if ((rv = nng_msg_alloc(&m, size)) != 0)
		return rv;
	memset(nng_msg_body(m), 'x', size);
	if ((rv = nng_sendmsg(s, m, 0)) != 0)
		nng_msg_free(m);
	return rv;
}

int
main(int argc, char **argv)
{
	double seconds = 2, t0, t1;
	size_t size = 64;
	char dir[] = "/tmp/nngrate.XXXXXX", url[256];
	nng_socket s;
	uint64_t sent = 0, got = 0, trips = 0;
	pid_t pid;
	int rv, st;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (!strcmp(argv[i], "--seconds"))
			seconds = atof(argv[i + 1]);
		else if (!strcmp(argv[i], "--size"))
			size = (size_t)atol(argv[i + 1]);
		else {
			fprintf(stderr, "usage: nngrate [--seconds S] [--size BYTES]\n");
			return 2;
		}
	}
	if (seconds <= 0 || size < 2 || size > 64u << 20) {
		fprintf(stderr, "nngrate: --seconds must be > 0, --size 2..64 MiB\n");
		return 2;
	}
	if (!mkdtemp(dir)) {
		perror("nngrate: mkdtemp");
		return 1;
	}
	snprintf(url, sizeof(url), "ipc://%s/s", dir);
	/* Fork before the first nng call: nng's threads do not survive a
	 * fork. */
	if ((pid = fork()) < 0) {
		perror("nngrate: fork");
		return 1;
	}
	if (pid == 0)
		_exit(child(url, size));
	if (open_sock(&s, size))
		return 1;
	if ((rv = nng_listen(s, url, NULL, 0)) != 0)
		return fail("nng_listen", rv);

	t0 = (double)wl_mono_ns() / 1e9;
	while ((t1 = (double)wl_mono_ns() / 1e9) - t0 < seconds) {
		for (int k = 0; k < 256; k++) {
			if ((rv = send_size(s, size)) != 0)
				return fail("nng_sendmsg", rv);
			sent++;
		}
	}
	if ((rv = send_size(s, 1)) != 0)
		return fail("nng_sendmsg", rv);
	{
		nng_msg *m;

		if ((rv = nng_recvmsg(s, &m, 0)) != 0)
			return fail("nng_recvmsg", rv);
		if (nng_msg_len(m) == sizeof(got))
			memcpy(&got, nng_msg_body(m), sizeof(got));
		nng_msg_free(m);
	}
	t1 = (double)wl_mono_ns() / 1e9;       /* until the child has them all */
	printf("NNGRATE stream size=%zu sent=%llu received=%llu "
	    "msgs_per_s=%.0f\n", size, (unsigned long long)sent,
	    (unsigned long long)got, (double)got / (t1 - t0));

	t0 = (double)wl_mono_ns() / 1e9;
	while ((t1 = (double)wl_mono_ns() / 1e9) - t0 < seconds) {
		nng_msg *m;

		if ((rv = send_size(s, size)) != 0)
			return fail("nng_sendmsg", rv);
		if ((rv = nng_recvmsg(s, &m, 0)) != 0)
			return fail("nng_recvmsg", rv);
		nng_msg_free(m);
		trips++;
	}
	printf("NNGRATE pingpong size=%zu round_trips_per_s=%.0f rtt_us=%.1f\n",
	    size, (double)trips / (t1 - t0), (t1 - t0) * 1e6 / (double)trips);
	fflush(stdout);
	(void)send_size(s, 1);
	waitpid(pid, &st, 0);
	nng_close(s);
	{
		char path[300];

		snprintf(path, sizeof(path), "%s/s", dir);
		unlink(path);
		rmdir(dir);
	}
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : 1;
}
