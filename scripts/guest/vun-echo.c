/*
 * vun-echo: a tiny static TCP/UDP echo server and client for the test guest.
 * busybox nc has no UDP mode, so the guest carries this instead.
 *
 *   vun-echo tcp-server PORT            echo every TCP connection (fork each)
 *   vun-echo udp-server PORT            echo every UDP datagram to its sender
 *   vun-echo tcp HOST PORT MSG [MS]     send MSG, half-close, print the reply
 *   vun-echo udp HOST PORT MSG [MS]     send one datagram, print the reply
 *   vun-echo ra IFACE [MS]              send a router solicitation, print the
 *                                       first router advertisement
 *   vun-echo dhcp6 IFACE info|solicit [MS]
 *                                       one DHCPv6 Information-request, or a
 *                                       Solicit with Rapid Commit asking for
 *                                       one address; print the answer
 *
 * HOST is a numeric IPv4 or IPv6 address. Servers listen on [::] with
 * IPV6_V6ONLY off, so they answer both families, and print
 * "vun-echo: tcp from ADDR" for each connection or "vun-echo: udp from ADDR"
 * for each datagram (IPv4 peers as ::ffff:a.b.c.d).
 * Clients exit 0 on a reply, 1 on timeout (default 5000 ms) or error, 2 on
 * bad usage.
 *
 * busybox has no tool that shows what a router advertisement or a DHCPv6
 * server said (the kernel applies an RA but keeps RDNSS to itself; there is
 * no udhcpc6), so `ra` and `dhcp6` print every field they know, one line each:
 *
 *   ra from fe80::2 hoplimit=64 flags=M,O router_lifetime=1800 reachable=0 retrans=0
 *   slla 52:56:00:00:00:02
 *   prefix fec0::/64 flags=L,A valid=86400 preferred=14400
 *   mtu 1500
 *   rdnss fec0::3 lifetime=1800
 *   dnssl example.com lifetime=1800
 *   option 24 len=16                    (any other option)
 *
 *   dhcp6 reply from fe80::2
 *   client-id ours                      ("other" if it is not the one sent)
 *   server-id 0003000152550a000202
 *   rapid-commit
 *   dns fec0::3
 *   domain example.com
 *   ia_na iaid=1 t1=3600 t2=5400
 *   address fec0::15 preferred=3600 valid=7200
 *   status 0 Success
 *   option 59 len=30
 */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/icmp6.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int usage(void)
{
	fprintf(stderr, "usage: vun-echo tcp-server|udp-server PORT\n"
			"       vun-echo tcp|udp HOST PORT MSG [TIMEOUT_MS]\n"
			"       vun-echo ra IFACE [TIMEOUT_MS]\n"
			"       vun-echo dhcp6 IFACE info|solicit [TIMEOUT_MS]\n");
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

/* "vun-echo: PROTO from ADDR" for a peer of a server's [::] socket (IPv4 peers as ::ffff:a.b.c.d). */
static void print_peer(const char *proto, const struct sockaddr_storage *peer)
{
	char name[INET6_ADDRSTRLEN];
	const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)peer;
	if (peer->ss_family != AF_INET6 || inet_ntop(AF_INET6, &a->sin6_addr, name, sizeof name) == NULL)
		strcpy(name, "?");
	printf("vun-echo: %s from %s\n", proto, name);
	fflush(stdout);
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
		struct sockaddr_storage peer;
		socklen_t pl = sizeof peer;
		int c = accept(lfd, (struct sockaddr *)&peer, &pl);
		if (c < 0) {
			if (errno == EINTR)
				continue;
			perror("accept");
			return 1;
		}
		print_peer("tcp", &peer);
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
		print_peer("udp", &from);
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

/* --- IPv6 link services: router solicitation and DHCPv6 ----------------- */

static unsigned be16(const unsigned char *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

static unsigned long be32(const unsigned char *p)
{
	return (unsigned long)p[0] << 24 | (unsigned long)p[1] << 16 | (unsigned long)p[2] << 8 | p[3];
}

static const char *addr6(const unsigned char *p, char *buf)
{
	if (inet_ntop(AF_INET6, p, buf, INET6_ADDRSTRLEN) == NULL)
		strcpy(buf, "?");
	return buf;
}

static long now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000L + t.tv_nsec / 1000000L;
}

/*
 * Uncompressed domain names back to back (DNSSL, DHCPv6 option 24), printed
 * space-separated; zero padding after the last name is skipped.
 */
static void print_domains(const unsigned char *p, const unsigned char *end)
{
	int first = 1;
	while (p < end) {
		if (*p == 0) {
			p++;
			continue;
		}
		if (!first)
			putchar(' ');
		first = 0;
		while (p < end && *p != 0) {
			unsigned len = *p++;
			if (len > 63 || p + len > end) {
				printf("<bad name>");
				return;
			}
			printf("%.*s", (int)len, (const char *)p);
			p += len;
			if (p < end && *p != 0)
				putchar('.');
		}
	}
}

/*
 * Sends `out` to `to` every second until a datagram for which `accept`
 * returns 1 arrives on `fd` (its length then) or the time is up (-1).
 */
static ssize_t exchange(int fd, const void *out, size_t outlen, const struct sockaddr_in6 *to,
			unsigned char *buf, size_t buflen, struct sockaddr_in6 *from, int timeout_ms,
			int (*accept_reply)(const unsigned char *, size_t, const void *), const void *ctx)
{
	long deadline = now_ms() + timeout_ms;
	long resend = 0;
	for (;;) {
		long now = now_ms();
		if (now >= deadline) {
			fprintf(stderr, "vun-echo: timeout\n");
			return -1;
		}
		if (now >= resend) {
			if (sendto(fd, out, outlen, 0, (const struct sockaddr *)to, sizeof *to) < 0) {
				perror("sendto");
				return -1;
			}
			resend = now + 1000;
		}
		long wait = (resend < deadline ? resend : deadline) - now;
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int n = poll(&p, 1, (int)wait);
		if (n < 0 && errno != EINTR) {
			perror("poll");
			return -1;
		}
		if (n <= 0)
			continue;
		socklen_t fl = sizeof *from;
		ssize_t r = recvfrom(fd, buf, buflen, 0, (struct sockaddr *)from, &fl);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			perror("recvfrom");
			return -1;
		}
		if (accept_reply(buf, (size_t)r, ctx))
			return r;
	}
}

/*
 * The set flags among the top bits of `bits`, named by `names` from bit 7
 * down, comma-separated ("M,O"); "-" when none is set.
 */
static const char *flag_names(char *out, unsigned bits, const char *names)
{
	char *o = out;
	for (int i = 0; names[i] != '\0'; i++) {
		if (!(bits & (0x80u >> i)))
			continue;
		if (o != out)
			*o++ = ',';
		*o++ = names[i];
	}
	if (o == out)
		*o++ = '-';
	*o = '\0';
	return out;
}

static int is_router_advert(const unsigned char *b, size_t n, const void *ctx)
{
	(void)ctx;
	return n >= sizeof(struct nd_router_advert) && b[0] == ND_ROUTER_ADVERT && b[1] == 0;
}

static void print_router_advert(const unsigned char *b, size_t n, const struct sockaddr_in6 *from)
{
	char a[INET6_ADDRSTRLEN];
	const unsigned char *p = b + sizeof(struct nd_router_advert), *end = b + n;
	char f[16];
	printf("ra from %s hoplimit=%u flags=%s router_lifetime=%u reachable=%lu retrans=%lu\n",
	       addr6(from->sin6_addr.s6_addr, a), b[4], flag_names(f, b[5], "MO"), be16(b + 6), be32(b + 8),
	       be32(b + 12));
	while (p + 2 <= end) {
		size_t len = (size_t)p[1] * 8;
		if (len == 0 || p + len > end) {
			printf("bad option %u\n", p[0]);
			break;
		}
		switch (p[0]) {
		case ND_OPT_SOURCE_LINKADDR:
			if (len >= 8)
				printf("slla %02x:%02x:%02x:%02x:%02x:%02x\n", p[2], p[3], p[4], p[5], p[6], p[7]);
			break;
		case ND_OPT_PREFIX_INFORMATION:
			if (len == 32)
				printf("prefix %s/%u flags=%s valid=%lu preferred=%lu\n", addr6(p + 16, a), p[2],
				       flag_names(f, p[3], "LAR"), be32(p + 4), be32(p + 8));
			break;
		case ND_OPT_MTU:
			printf("mtu %lu\n", be32(p + 4));
			break;
		case 25: /* RDNSS, RFC 8106 */
			for (const unsigned char *q = p + 8; q + 16 <= p + len; q += 16)
				printf("rdnss %s lifetime=%lu\n", addr6(q, a), be32(p + 4));
			break;
		case 31: /* DNSSL, RFC 8106 */
			printf("dnssl ");
			print_domains(p + 8, p + len);
			printf(" lifetime=%lu\n", be32(p + 4));
			break;
		default:
			printf("option %u len=%zu\n", p[0], len);
		}
		p += len;
	}
}

/* Opens a datagram socket of `type`/`proto` bound to the interface; its index in *idx. */
static int link_socket(const char *ifname, int type, int proto, unsigned *idx)
{
	*idx = if_nametoindex(ifname);
	if (*idx == 0) {
		fprintf(stderr, "vun-echo: no interface %s\n", ifname);
		return -1;
	}
	int fd = socket(AF_INET6, type, proto);
	if (fd < 0) {
		perror("socket");
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, ifname, (socklen_t)strlen(ifname)) < 0 ||
	    setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, idx, sizeof *idx) < 0) {
		perror("setsockopt");
		return -1;
	}
	return fd;
}

static int router_solicit(const char *ifname, int timeout_ms)
{
	static unsigned char buf[65536];
	unsigned idx;
	int hops = 255;
	struct icmp6_filter filter;
	struct nd_router_solicit rs;
	struct sockaddr_in6 to, from;
	int fd = link_socket(ifname, SOCK_RAW, IPPROTO_ICMPV6, &idx);
	if (fd < 0)
		return 1;
	ICMP6_FILTER_SETBLOCKALL(&filter);
	ICMP6_FILTER_SETPASS(ND_ROUTER_ADVERT, &filter);
	/* NDP messages must arrive with hop limit 255 (RFC 4861 6.1.2). */
	if (setsockopt(fd, IPPROTO_ICMPV6, ICMP6_FILTER, &filter, sizeof filter) < 0 ||
	    setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_HOPS, &hops, sizeof hops) < 0) {
		perror("setsockopt");
		return 1;
	}
	memset(&rs, 0, sizeof rs);
	rs.nd_rs_type = ND_ROUTER_SOLICIT;
	memset(&to, 0, sizeof to);
	to.sin6_family = AF_INET6;
	to.sin6_scope_id = idx;
	inet_pton(AF_INET6, "ff02::2", &to.sin6_addr);
	ssize_t n = exchange(fd, &rs, sizeof rs, &to, buf, sizeof buf, &from, timeout_ms, is_router_advert, NULL);
	if (n < 0)
		return 1;
	print_router_advert(buf, (size_t)n, &from);
	fflush(stdout);
	return 0;
}

#define DHCP6_SOLICIT 1
#define DHCP6_ADVERTISE 2
#define DHCP6_REPLY 7
#define DHCP6_INFORMATION_REQUEST 11

static int is_dhcp6_answer(const unsigned char *b, size_t n, const void *ctx)
{
	const unsigned char *sent = ctx;
	return n >= 4 && (b[0] == DHCP6_ADVERTISE || b[0] == DHCP6_REPLY) && memcmp(b + 1, sent + 1, 3) == 0;
}

static void print_dhcp6_status(const unsigned char *p, size_t len)
{
	if (len >= 2)
		printf("status %u %.*s\n", be16(p), (int)(len - 2), (const char *)p + 2);
}

static void print_dhcp6_answer(const unsigned char *b, size_t n, const struct sockaddr_in6 *from,
			       const unsigned char *client_id, size_t client_id_len)
{
	char a[INET6_ADDRSTRLEN];
	const unsigned char *p = b + 4, *end = b + n;
	printf("dhcp6 %s from %s\n", b[0] == DHCP6_REPLY ? "reply" : "advertise", addr6(from->sin6_addr.s6_addr, a));
	while (p + 4 <= end) {
		unsigned code = be16(p);
		size_t len = be16(p + 2);
		const unsigned char *v = p + 4;
		if (v + len > end) {
			printf("bad option %u\n", code);
			break;
		}
		switch (code) {
		case 1:
			printf("client-id %s\n", len == client_id_len && memcmp(v, client_id, len) == 0 ? "ours" : "other");
			break;
		case 2:
			printf("server-id ");
			for (size_t i = 0; i < len; i++)
				printf("%02x", v[i]);
			printf("\n");
			break;
		case 3: /* IA_NA: IAID, T1, T2, then its own options */
			if (len < 12) {
				printf("bad option 3\n");
				break;
			}
			printf("ia_na iaid=%lu t1=%lu t2=%lu\n", be32(v), be32(v + 4), be32(v + 8));
			for (const unsigned char *q = v + 12; q + 4 <= v + len;) {
				size_t ql = be16(q + 2);
				if (q + 4 + ql > v + len) {
					printf("bad option %u\n", be16(q));
					break;
				}
				if (be16(q) == 5 && ql >= 24)
					printf("address %s preferred=%lu valid=%lu\n", addr6(q + 4, a), be32(q + 20), be32(q + 24));
				else if (be16(q) == 13)
					print_dhcp6_status(q + 4, ql);
				else
					printf("option %u len=%zu\n", be16(q), ql);
				q += 4 + ql;
			}
			break;
		case 13:
			print_dhcp6_status(v, len);
			break;
		case 14:
			printf("rapid-commit\n");
			break;
		case 23:
			for (size_t i = 0; i + 16 <= len; i += 16)
				printf("dns %s\n", addr6(v + i, a));
			break;
		case 24:
			printf("domain ");
			print_domains(v, v + len);
			printf("\n");
			break;
		default:
			printf("option %u len=%zu\n", code, len);
		}
		p = v + len;
	}
}

static unsigned char *put_option(unsigned char *p, unsigned code, const void *value, size_t len)
{
	*p++ = (unsigned char)(code >> 8);
	*p++ = (unsigned char)code;
	*p++ = (unsigned char)(len >> 8);
	*p++ = (unsigned char)len;
	if (len > 0)
		memcpy(p, value, len);
	return p + len;
}

static int dhcp6(const char *ifname, int solicit, int timeout_ms)
{
	static unsigned char buf[65536];
	unsigned char msg[128], *p = msg;
	unsigned char duid[10] = { 0, 3, 0, 1 }; /* DUID-LL, Ethernet */
	static const unsigned char oro[] = { 0, 23, 0, 24 }; /* DNS servers, domain list */
	static const unsigned char elapsed[2] = { 0, 0 };
	static const unsigned char ia_na[12] = { 0, 0, 0, 1 }; /* IAID 1, T1 and T2 left to the server */
	struct sockaddr_in6 me, to, from;
	struct ifreq ifr;
	unsigned idx;
	int one = 1;
	long xid = (long)(now_ms() ^ getpid());
	int fd = link_socket(ifname, SOCK_DGRAM, 0, &idx);
	if (fd < 0)
		return 1;
	memset(&ifr, 0, sizeof ifr);
	snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
	if (ioctl(fd, SIOCGIFHWADDR, &ifr) < 0) {
		perror("SIOCGIFHWADDR");
		return 1;
	}
	memcpy(duid + 4, ifr.ifr_hwaddr.sa_data, 6);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	memset(&me, 0, sizeof me);
	me.sin6_family = AF_INET6;
	me.sin6_port = htons(546);
	if (bind(fd, (struct sockaddr *)&me, sizeof me) < 0) {
		perror("bind");
		return 1;
	}
	*p++ = solicit ? DHCP6_SOLICIT : DHCP6_INFORMATION_REQUEST;
	*p++ = (unsigned char)(xid >> 16);
	*p++ = (unsigned char)(xid >> 8);
	*p++ = (unsigned char)xid;
	p = put_option(p, 1, duid, sizeof duid);
	p = put_option(p, 8, elapsed, sizeof elapsed);
	p = put_option(p, 6, oro, sizeof oro);
	if (solicit) {
		p = put_option(p, 14, NULL, 0);
		p = put_option(p, 3, ia_na, sizeof ia_na);
	}
	memset(&to, 0, sizeof to);
	to.sin6_family = AF_INET6;
	to.sin6_port = htons(547);
	to.sin6_scope_id = idx;
	inet_pton(AF_INET6, "ff02::1:2", &to.sin6_addr);
	ssize_t n = exchange(fd, msg, (size_t)(p - msg), &to, buf, sizeof buf, &from, timeout_ms, is_dhcp6_answer, msg);
	if (n < 0)
		return 1;
	print_dhcp6_answer(buf, (size_t)n, &from, duid, sizeof duid);
	fflush(stdout);
	return 0;
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
	if ((argc == 3 || argc == 4) && strcmp(argv[1], "ra") == 0) {
		int timeout = argc == 4 ? atoi(argv[3]) : 5000;
		return timeout <= 0 ? usage() : router_solicit(argv[2], timeout);
	}
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "dhcp6") == 0 &&
	    (strcmp(argv[3], "info") == 0 || strcmp(argv[3], "solicit") == 0)) {
		int timeout = argc == 5 ? atoi(argv[4]) : 5000;
		return timeout <= 0 ? usage() : dhcp6(argv[2], argv[3][0] == 's', timeout);
	}
	return usage();
}
