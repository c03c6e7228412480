/*
 * microagent-connect HOST PORT: a raw TCP stream through the workspace's egress proxy, for programs
 * that dial sockets themselves and take a helper command, above all ssh's ProxyCommand. It sends an
 * HTTP CONNECT to the proxy named by HTTPS_PROXY (the guest's environment has it), then relays
 * stdin -> proxy and proxy -> stdout until the proxy side ends. A refusal prints the proxy's status,
 * reason and one-line answer on stderr and exits 1, so the user sees which rule or reason said no.
 * The same static binary as the agent, run under this name (boot.c exposes it in /run/microagent/bin).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

#define HEAD_MAX 8192

static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  dprintf(2, "microagent-connect: ");
  vdprintf(2, fmt, ap);
  dprintf(2, "\n");
  va_end(ap);
  return 1;
}

/* http://IP:PORT from HTTPS_PROXY (or its lower-case twin): the guest's proxy is an IPv4 literal. */
static int proxy_address(struct sockaddr_in *out) {
  const char *v = getenv("HTTPS_PROXY");
  if (v == NULL || !*v) v = getenv("https_proxy");
  if (v == NULL || !*v) return -1;
  if (strncmp(v, "http://", 7) == 0) v += 7;
  char host[64];
  const char *colon = strchr(v, ':');
  if (colon == NULL || (size_t)(colon - v) >= sizeof host) return -1;
  memcpy(host, v, (size_t)(colon - v));
  host[colon - v] = 0;
  char *end;
  long port = strtol(colon + 1, &end, 10);
  if (port < 1 || port > 65535 || (*end && *end != '/')) return -1;
  memset(out, 0, sizeof *out);
  out->sin_family = AF_INET;
  out->sin_port = htons((uint16_t)port);
  return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Prints a refusal's status line, reason header and body (the proxy's one-line answer) on stderr. */
static void report_refusal(const char *head, const char *body, size_t body_len) {
  const char *eol = strstr(head, "\r\n");
  dprintf(2, "microagent-connect: the proxy refused the tunnel: %.*s\n", eol ? (int)(eol - head) : (int)strlen(head), head);
  for (const char *line = eol; line != NULL && line[2]; line = strstr(line + 2, "\r\n")) {
    if (strncasecmp(line + 2, "x-microagent-reason:", 20) == 0) {
      const char *end = strstr(line + 2, "\r\n");
      dprintf(2, "  reason:%.*s\n", (int)(end - line - 22), line + 22);
    }
  }
  if (body_len) dprintf(2, "  %.*s%s", (int)body_len, body, body[body_len - 1] == '\n' ? "" : "\n");
}

/* stdin -> sock and sock -> stdout until the proxy side ends; stdin's end half-closes our side. */
static int relay(int sock) {
  char buf[16384];
  int in_open = 1;
  for (;;) {
    struct pollfd p[2] = {{.fd = sock, .events = POLLIN}, {.fd = in_open ? 0 : -1, .events = POLLIN}};
    if (poll(p, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return 1;
    }
    if (p[0].revents) {
      ssize_t n = read(sock, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return n == 0 ? 0 : 1;
      if (write_all(1, buf, (size_t)n) != 0) return 1;
    }
    if (p[1].revents) {
      ssize_t n = read(0, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        in_open = 0;
        shutdown(sock, SHUT_WR);
      } else if (write_all(sock, buf, (size_t)n) != 0) {
        return 1;
      }
    }
  }
}

int connect_main(int argc, char **argv) {
  if (argc != 3) {
    dprintf(2, "usage: microagent-connect HOST PORT\n"
               "  a TCP stream to HOST:PORT through the workspace's egress proxy, for ssh's\n"
               "  ProxyCommand: ssh -o ProxyCommand='" CONNECT_HELPER_PATH " %%h %%p' git@HOST\n");
    return 2;
  }
  const char *host = argv[1], *port = argv[2];
  char *end;
  long portnum = strtol(port, &end, 10);
  if (!*host || *end || portnum < 1 || portnum > 65535) return fail("invalid target %s:%s: give a host name or address and a port 1-65535", host, port);
  struct sockaddr_in proxy;
  if (proxy_address(&proxy) != 0)
    return fail("HTTPS_PROXY (%s) does not name the workspace's proxy as http://IP:PORT; this runs inside a microagent workspace with network user",
                getenv("HTTPS_PROXY") ? getenv("HTTPS_PROXY") : "unset");
  int sock = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (sock < 0 || connect(sock, (struct sockaddr *)&proxy, sizeof proxy) != 0) return fail("cannot reach the proxy: %s", strerror(errno));
  /* An IPv6 literal goes in brackets, or its colons would read as the port's. */
  int v6 = strchr(host, ':') != NULL && host[0] != '[';
  char req[1024];
  int n = snprintf(req, sizeof req, "CONNECT %s%s%s:%ld HTTP/1.1\r\nHost: %s%s%s:%ld\r\n\r\n", v6 ? "[" : "", host, v6 ? "]" : "", portnum,
                   v6 ? "[" : "", host, v6 ? "]" : "", portnum);
  if (n < 0 || (size_t)n >= sizeof req) return fail("host name too long: %s", host);
  if (write_all(sock, req, (size_t)n) != 0) return fail("the proxy closed the connection: %s", strerror(errno));

  char head[HEAD_MAX + 1];
  size_t have = 0;
  char *body = NULL;
  while (body == NULL) {
    if (have == HEAD_MAX) return fail("the proxy's answer has no end of headers in %d bytes", HEAD_MAX);
    ssize_t r = read(sock, head + have, HEAD_MAX - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return fail("the proxy closed the connection before answering the CONNECT");
    have += (size_t)r;
    head[have] = 0;
    char *blank = strstr(head, "\r\n\r\n");
    if (blank) body = blank + 4;
  }
  size_t after = have - (size_t)(body - head);
  if (strncmp(head, "HTTP/1.1 200", 12) != 0 && strncmp(head, "HTTP/1.0 200", 12) != 0) {
    /* The proxy closes after its answer: read the one-line body to its end (what fits). */
    for (ssize_t r; have < HEAD_MAX && ((r = read(sock, head + have, HEAD_MAX - have)) > 0 || (r < 0 && errno == EINTR));) {
      if (r > 0) have += (size_t)r;
    }
    head[have] = 0;
    after = have - (size_t)(body - head);
    body[-2] = 0;
    report_refusal(head, body, after);
    return 1;
  }
  /* Bytes the server sent right behind the 200 (an SSH greeting) belong to the stream. */
  if (after && write_all(1, body, after) != 0) return 1;
  return relay(sock);
}
