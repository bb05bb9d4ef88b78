/*
 * vun-echo: a tiny static TCP/UDP echo server and client for the test guest.
 * busybox nc has no UDP mode, so the guest carries this instead.
 *
 *   vun-echo tcp-server PORT            echo every TCP connection (fork each)
 *   vun-echo udp-server PORT            echo every UDP datagram to its sender
 *   vun-echo tcp HOST PORT MSG [MS]     send MSG, half-close, print the reply
 *   vun-echo udp HOST PORT MSG [MS]     send one datagram, print the reply
 *
 * HOST is a numeric IPv4 or IPv6 address. Servers listen on [::] with
 * IPV6_V6ONLY off, so they answer both families. Clients exit 0 on a reply,
 * 1 on timeout (default 5000 ms) or error, 2 on bad usage.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

static int usage(void)
{
	fprintf(stderr, "usage: vun-echo tcp-server|udp-server PORT\n"
			"       vun-echo tcp|udp HOST PORT MSG [TIMEOUT_MS]\n");
	return 2;
}

static int parse_port(const char *s)
{
	char *end;
	long v = strtol(s, &end, 10);
	if (*s == '\0' || *end != '\0' || v < 0 || v > 65535)
		return -1;
	return (int)v;
}

static int listen_any(int type, int port)
{
	struct sockaddr_in6 a;
	int one = 1, zero = 0;
	int fd = socket(AF_INET6, type, 0);
	if (fd < 0) {
		perror("socket");
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
	memset(&a, 0, sizeof a);
	a.sin6_family = AF_INET6;
	a.sin6_addr = in6addr_any;
	a.sin6_port = htons((unsigned short)port);
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		perror("bind");
		return -1;
	}
	if (type == SOCK_STREAM && listen(fd, 64) < 0) {
		perror("listen");
		return -1;
	}
	return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

static int tcp_server(int port)
{
	int lfd = listen_any(SOCK_STREAM, port);
	if (lfd < 0)
		return 1;
	signal(SIGCHLD, SIG_IGN);
	printf("vun-echo: tcp listening on %d\n", port);
	fflush(stdout);
	for (;;) {
		int c = accept(lfd, NULL, NULL);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			perror("accept");
			return 1;
		}
		pid_t pid = fork();
		if (pid == 0) {
			char buf[65536];
			ssize_t r;
			close(lfd);
			while ((r = read(c, buf, sizeof buf)) > 0)
				if (write_all(c, buf, (size_t)r) < 0)
					break;
			_exit(0);
		}
		close(c);
	}
}

static int udp_server(int port)
{
	static char buf[65536];
	int fd = listen_any(SOCK_DGRAM, port);
	if (fd < 0)
		return 1;
	printf("vun-echo: udp listening on %d\n", port);
	fflush(stdout);
	for (;;) {
		struct sockaddr_storage from;
		socklen_t fl = sizeof from;
		ssize_t r = recvfrom(fd, buf, sizeof buf, 0, (struct sockaddr *)&from, &fl);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			perror("recvfrom");
			return 1;
		}
		sendto(fd, buf, (size_t)r, 0, (struct sockaddr *)&from, fl);
	}
}

static int make_addr(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
	memset(ss, 0, sizeof *ss);
	if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
		a4->sin_family = AF_INET;
		a4->sin_port = htons((unsigned short)port);
		*len = sizeof *a4;
		return 0;
	}
	if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((unsigned short)port);
		*len = sizeof *a6;
		return 0;
	}
	fprintf(stderr, "vun-echo: not a numeric address: %s\n", host);
	return -1;
}

static int client(int type, const char *host, int port, const char *msg, int timeout_ms)
{
	static char buf[65536];
	struct sockaddr_storage ss;
	socklen_t sl;
	int got = 0;
	if (make_addr(host, port, &ss, &sl) < 0)
		return 2;
	int fd = socket(ss.ss_family, type, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	if (connect(fd, (struct sockaddr *)&ss, sl) < 0) {
		perror("connect");
		return 1;
	}
	if (write_all(fd, msg, strlen(msg)) < 0) {
		perror("write");
		return 1;
	}
	if (type == SOCK_STREAM)
		shutdown(fd, SHUT_WR);
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int n = poll(&p, 1, timeout_ms);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "vun-echo: timeout\n");
			return 1;
		}
		ssize_t r = read(fd, buf, sizeof buf);
		if (r < 0) {
			perror("read");
			return 1;
		}
		if (r == 0)
			break;
		fwrite(buf, 1, (size_t)r, stdout);
		got = 1;
		if (type == SOCK_DGRAM)
			break;
	}
	fflush(stdout);
	return got || msg[0] == '\0' ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "tcp-server") == 0) {
		int port = parse_port(argv[2]);
		return port < 0 ? usage() : tcp_server(port);
	}
	if (argc == 3 && strcmp(argv[1], "udp-server") == 0) {
		int port = parse_port(argv[2]);
		return port < 0 ? usage() : udp_server(port);
	}
	if ((argc == 5 || argc == 6) && (strcmp(argv[1], "tcp") == 0 || strcmp(argv[1], "udp") == 0)) {
		int port = parse_port(argv[3]);
		int timeout = argc == 6 ? atoi(argv[5]) : 5000;
		if (port < 0 || timeout <= 0)
			return usage();
		return client(argv[1][0] == 't' ? SOCK_STREAM : SOCK_DGRAM, argv[2], port, argv[4], timeout);
	}
	return usage();
}
