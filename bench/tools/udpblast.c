/*
 * udpblast: the host end of the DPDK packet-rate benchmark (bench/dpdk.ts),
 * a UDP sink and a UDP sender cheap enough per datagram that the backend
 * under test, not this tool, sets the rate.
 *
 *   udpblast sink ADDR PORT                  receive and count datagrams
 *                                            (recvmmsg, 64 at a time) until
 *                                            SIGTERM/SIGINT; print one line
 *                                            on every SIGUSR1 and at the end:
 *   udpblast sink datagrams=N bytes=B
 *
 *   udpblast send ADDR PORT SIZE SECONDS [RATE]
 *                                            send SIZE-byte datagrams
 *                                            (sendmmsg, 64 at a time) as fast
 *                                            as the kernel takes them, or at
 *                                            about RATE per second (paced in
 *                                            1 ms slices), for SECONDS, then
 *                                            print one line:
 *   udpblast send datagrams=N errors=E
 *
 * The sink prints "udpblast sink ready" once bound. ADDR is a numeric IPv4
 * address. A send error (ECONNREFUSED after an ICMP port unreachable, or
 * ENOBUFS) is counted and sending goes on. Exit status: 0 ok, 1 error,
 * 2 usage.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#define MAX_SIZE 65507

static volatile sig_atomic_t report_requested;
static volatile sig_atomic_t stop_requested;

static void on_report(int sig)
{
	(void)sig;
	report_requested = 1;
}

static void on_stop(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static int usage(void)
{
	fprintf(stderr, "usage: udpblast sink ADDR PORT\n"
			"       udpblast send ADDR PORT SIZE SECONDS [RATE]\n");
	return 2;
}

static int parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *s == '\0' || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int address(const char *ip, const char *port, struct sockaddr_in *sa)
{
	long p;
	memset(sa, 0, sizeof(*sa));
	sa->sin_family = AF_INET;
	if (inet_pton(AF_INET, ip, &sa->sin_addr) != 1 || parse_long(port, 1, 65535, &p))
		return -1;
	sa->sin_port = htons((unsigned short)p);
	return 0;
}

static double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int sink(const struct sockaddr_in *sa)
{
	static char bufs[BATCH][2048];
	struct mmsghdr msgs[BATCH];
	struct iovec iov[BATCH];
	unsigned long long datagrams = 0, bytes = 0;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int rcvbuf = 4 << 20;
	/* Wake up every 100 ms to notice signals even when nothing arrives. */
	struct timeval tv = { .tv_sec = 0, .tv_usec = 100000 };

	if (fd < 0 || bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		perror("udpblast sink: bind");
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	for (int i = 0; i < BATCH; i++) {
		iov[i].iov_base = bufs[i];
		iov[i].iov_len = sizeof(bufs[i]);
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].msg_hdr.msg_iov = &iov[i];
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	printf("udpblast sink ready\n");
	fflush(stdout);
	while (!stop_requested) {
		int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
		if (n > 0) {
			datagrams += (unsigned)n;
			for (int i = 0; i < n; i++)
				bytes += msgs[i].msg_len;
		} else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
			perror("udpblast sink: recvmmsg");
			return 1;
		}
		if (report_requested) {
			report_requested = 0;
			printf("udpblast sink datagrams=%llu bytes=%llu\n", datagrams, bytes);
			fflush(stdout);
		}
	}
	printf("udpblast sink datagrams=%llu bytes=%llu\n", datagrams, bytes);
	return 0;
}

static int sender(const struct sockaddr_in *sa, long size, long seconds, long rate)
{
	static char payload[MAX_SIZE];
	struct mmsghdr msgs[BATCH];
	struct iovec iov = { .iov_base = payload, .iov_len = (size_t)size };
	unsigned long long datagrams = 0, errors = 0;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	int sndbuf = 4 << 20;

	if (fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) < 0) {
		perror("udpblast send: connect");
		return 1;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	memset(payload, 'u', sizeof(payload));
	for (int i = 0; i < BATCH; i++) {
		memset(&msgs[i], 0, sizeof(msgs[i]));
		msgs[i].msg_hdr.msg_iov = &iov;
		msgs[i].msg_hdr.msg_iovlen = 1;
	}
	double start = now_seconds();
	double end = start + (double)seconds;
	for (double now = start; !stop_requested && now < end; now = now_seconds()) {
		unsigned batch = BATCH;
		if (rate > 0) {
			/* Behind schedule: send up to a batch; ahead: sleep to the next slice. */
			double due = (now - start) * (double)rate - (double)datagrams;
			if (due < 1) {
				struct timespec ms = { .tv_sec = 0, .tv_nsec = 1000000 };
				nanosleep(&ms, NULL);
				continue;
			}
			if (due < batch)
				batch = (unsigned)due;
		}
		int n = sendmmsg(fd, msgs, batch, 0);
		if (n > 0)
			datagrams += (unsigned)n;
		else if (n < 0 && errno != EINTR)
			errors++;
	}
	printf("udpblast send datagrams=%llu errors=%llu\n", datagrams, errors);
	return 0;
}

int main(int argc, char **argv)
{
	struct sockaddr_in sa;
	struct sigaction report = { .sa_handler = on_report };
	struct sigaction stop = { .sa_handler = on_stop };

	/* No SA_RESTART: a signal interrupts the blocking call. */
	sigaction(SIGUSR1, &report, NULL);
	sigaction(SIGTERM, &stop, NULL);
	sigaction(SIGINT, &stop, NULL);
	if (argc == 4 && strcmp(argv[1], "sink") == 0) {
		if (address(argv[2], argv[3], &sa))
			return usage();
		return sink(&sa);
	}
	if ((argc == 6 || argc == 7) && strcmp(argv[1], "send") == 0) {
		long size, seconds, rate = 0;
		if (address(argv[2], argv[3], &sa) || parse_long(argv[4], 0, MAX_SIZE, &size) ||
		    parse_long(argv[5], 1, 3600, &seconds) || (argc == 7 && parse_long(argv[6], 0, 100000000, &rate)))
			return usage();
		return sender(&sa, size, seconds, rate);
	}
	return usage();
}
