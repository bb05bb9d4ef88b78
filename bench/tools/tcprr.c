/*
 * tcprr: TCP (and UDP) request/response latency, the netperf TCP_RR and
 * UDP_RR idea in one small static binary that runs both in the test guest
 * and on the host.
 *
 *   tcprr [--udp] server ADDR PORT       echo every byte back (TCP: one
 *                                        connection at a time; UDP: every
 *                                        datagram to its sender); runs until
 *                                        killed
 *   tcprr [--udp] client ADDR PORT COUNT [SECS]
 *                                        connect, then COUNT round trips of
 *                                        one byte each (stops early after
 *                                        SECS seconds, default 10), and print
 *                                        one line (udprr with --udp):
 *   tcprr n=COUNT mean_us=.. p50_us=.. p99_us=.. min_us=.. max_us=..
 *
 * The client times each write-to-read-back with CLOCK_MONOTONIC; the first
 * WARMUP round trips are not counted (they pay for cold caches and, under
 * slirp/passt, for flow set-up). TCP: TCP_NODELAY on both ends. UDP: the
 * client's socket is connected, so write/read send and take one 1-byte
 * datagram each, the same loop as TCP; a datagram lost on the way fails the
 * run after UDP_REPLY_TIMEOUT_S (no retransmission, so no figure hides a
 * loss). ADDR is a numeric IPv4 address. Exit status: 0 ok, 1 error,
 * 2 usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define WARMUP 20
#define MAX_COUNT 1000000
#define UDP_REPLY_TIMEOUT_S 2

/* Set by --udp: SOCK_DGRAM instead of SOCK_STREAM, and the name printed. */
static int use_udp;
static const char *tool = "tcprr";

static int usage(void)
{
	fprintf(stderr, "usage: tcprr [--udp] server ADDR PORT\n"
			"       tcprr [--udp] client ADDR PORT COUNT [SECONDS]\n");
	return 2;
}

static int parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;
	errno = 0;
	v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || errno != 0 || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int make_addr(const char *host, long port, struct sockaddr_in *a)
{
	memset(a, 0, sizeof(*a));
	a->sin_family = AF_INET;
	a->sin_port = htons((unsigned short)port);
	return inet_pton(AF_INET, host, &a->sin_addr) == 1 ? 0 : -1;
}

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y ? 1 : 0;
}

/* Read exactly one byte; 1 on success, 0 on EOF, -1 on error. */
static int read_one(int fd, char *c)
{
	for (;;) {
		ssize_t r = read(fd, c, 1);
		if (r == 1)
			return 1;
		if (r == 0)
			return 0;
		if (errno != EINTR)
			return -1;
	}
}

static int write_one(int fd, char c)
{
	for (;;) {
		ssize_t w = write(fd, &c, 1);
		if (w == 1)
			return 0;
		if (w < 0 && errno != EINTR)
			return -1;
	}
}

/* UDP: every datagram straight back to whoever sent it. */
static int udp_echo(int fd)
{
	for (;;) {
		char buf[4096];
		struct sockaddr_in from;
		socklen_t len = sizeof(from);
		ssize_t r = recvfrom(fd, buf, sizeof(buf), 0, (struct sockaddr *)&from, &len);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			perror("recvfrom");
			return 1;
		}
		/* A reply that cannot go out is the client's loss to see; keep serving. */
		(void)sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&from, len);
	}
}

static int server(const char *host, long port)
{
	struct sockaddr_in a;
	int one = 1, fd;
	if (make_addr(host, port, &a) < 0)
		return usage();
	fd = socket(AF_INET, use_udp ? SOCK_DGRAM : SOCK_STREAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || (!use_udp && listen(fd, 8) < 0)) {
		perror("bind/listen");
		return 1;
	}
	printf("%s listening\n", tool);
	fflush(stdout);
	if (use_udp)
		return udp_echo(fd);
	for (;;) {
		char buf[4096];
		int c = accept(fd, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			perror("accept");
			return 1;
		}
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		for (;;) {
			ssize_t r = read(c, buf, sizeof(buf));
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				break;
			if (write(c, buf, (size_t)r) != r)
				break;
		}
		close(c);
	}
}

static int client(const char *host, long port, long count, long seconds)
{
	struct sockaddr_in a;
	int one = 1, fd;
	double *samples, deadline, sum = 0;
	long i, n = 0;
	char c = 'x';
	if (make_addr(host, port, &a) < 0)
		return usage();
	samples = calloc((size_t)count, sizeof(double));
	if (samples == NULL)
		return 1;
	fd = socket(AF_INET, use_udp ? SOCK_DGRAM : SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		perror("connect");
		return 1;
	}
	if (use_udp) {
		struct timeval tv = { .tv_sec = UDP_REPLY_TIMEOUT_S, .tv_usec = 0 };
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	} else {
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	deadline = now_us() + (double)seconds * 1e6;
	for (i = 0; i < count + WARMUP; i++) {
		double t0 = now_us(), t1;
		if (write_one(fd, c) < 0 || read_one(fd, &c) != 1) {
			fprintf(stderr, "%s: %s after %ld round trips\n", tool,
				use_udp ? "no reply (datagram lost?)" : "connection lost", i);
			return 1;
		}
		t1 = now_us();
		if (i >= WARMUP) {
			samples[n++] = t1 - t0;
			sum += t1 - t0;
		}
		if (t1 > deadline)
			break;
	}
	close(fd);
	if (n == 0) {
		fprintf(stderr, "%s: no round trip within %ld s\n", tool, seconds);
		return 1;
	}
	qsort(samples, (size_t)n, sizeof(double), cmp_double);
	printf("%s n=%ld mean_us=%.1f p50_us=%.1f p99_us=%.1f min_us=%.1f max_us=%.1f\n", tool, n, sum / (double)n,
	       samples[n / 2], samples[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1], samples[0], samples[n - 1]);
	free(samples);
	return 0;
}

int main(int argc, char **argv)
{
	long port, count, seconds = 10;
	signal(SIGPIPE, SIG_IGN);
	if (argc > 1 && strcmp(argv[1], "--udp") == 0) {
		use_udp = 1;
		tool = "udprr";
		argc--;
		argv++;
	}
	if (argc == 4 && strcmp(argv[1], "server") == 0) {
		if (parse_long(argv[3], 1, 65535, &port) < 0)
			return usage();
		return server(argv[2], port);
	}
	if ((argc == 5 || argc == 6) && strcmp(argv[1], "client") == 0) {
		if (parse_long(argv[3], 1, 65535, &port) < 0 || parse_long(argv[4], 1, MAX_COUNT, &count) < 0)
			return usage();
		if (argc == 6 && parse_long(argv[5], 1, 3600, &seconds) < 0)
			return usage();
		return client(argv[2], port, count, seconds);
	}
	return usage();
}
