/*
 * Guest-local DNS relay: UDP queries to 127.0.0.53:53 (the only nameserver in /etc/resolv.conf)
 * are forwarded one TCP connection each (RFC 7766 two-byte length framing) to the workspace
 * resolver's fixed guest address, which QEMU forwards to the host resolver socket. It never answers
 * a query itself and never forwards anywhere but the configured upstream; a query without an answer
 * in time is dropped (the client retries).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

#define MAX_PENDING 64
#define QUERY_TIMEOUT_MS 5000

struct pending {
  int used;
  int fd;
  struct sockaddr_in client;
  uint8_t query[2 + 512];
  size_t qlen, qsent;
  uint8_t answer[2 + 65535];
  size_t alen;
  int64_t deadline;
};

static int udp_fd = -1;
static struct sockaddr_in upstream;
static struct pending pending[MAX_PENDING];

void dns_enable(const char *host_port) {
  char host[64];
  unsigned port = 53;
  if (sscanf(host_port, "%63[0-9.]:%u", host, &port) < 1 || port == 0 || port > 65535 ||
      inet_pton(AF_INET, host, &upstream.sin_addr) != 1) {
    logmsg("dns relay: bad upstream %s", host_port);
    return;
  }
  upstream.sin_family = AF_INET;
  upstream.sin_port = htons((uint16_t)port);
  if (udp_fd >= 0) return;
  udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(53)};
  inet_pton(AF_INET, "127.0.0.53", &in.sin_addr);
  if (udp_fd < 0 || bind(udp_fd, (struct sockaddr *)&in, sizeof in) != 0) {
    logmsg("dns relay bind 127.0.0.53:53: %s", strerror(errno));
    if (udp_fd >= 0) close(udp_fd);
    udp_fd = -1;
  }
}

static void release(struct pending *q) {
  close(q->fd);
  q->used = 0;
}

static void take_query(void) {
  uint8_t msg[512];
  struct sockaddr_in from;
  socklen_t fl = sizeof from;
  ssize_t n = recvfrom(udp_fd, msg, sizeof msg, 0, (struct sockaddr *)&from, &fl);
  if (n < 12) return; /* shorter than a DNS header: not a query */
  struct pending *q = NULL;
  for (int i = 0; i < MAX_PENDING && !q; i++)
    if (!pending[i].used) q = &pending[i];
  if (!q) return;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  if (connect(fd, (struct sockaddr *)&upstream, sizeof upstream) != 0 && errno != EINPROGRESS) {
    close(fd);
    return;
  }
  q->used = 1;
  q->fd = fd;
  q->client = from;
  q->query[0] = (uint8_t)(n >> 8);
  q->query[1] = (uint8_t)n;
  memcpy(q->query + 2, msg, (size_t)n);
  q->qlen = 2 + (size_t)n;
  q->qsent = 0;
  q->alen = 0;
  q->deadline = now_ms() + QUERY_TIMEOUT_MS;
}

int dns_poll_fds(struct pollfd *fds, int max, int *tags) {
  int n = 0;
  if (udp_fd < 0) return 0;
  fds[n] = (struct pollfd){udp_fd, POLLIN, 0};
  tags[n++] = TAG(4, MAX_PENDING);
  for (int i = 0; i < MAX_PENDING && n < max; i++) {
    if (!pending[i].used) continue;
    fds[n] = (struct pollfd){pending[i].fd, pending[i].qsent < pending[i].qlen ? POLLOUT : POLLIN, 0};
    tags[n++] = TAG(4, i);
  }
  return n;
}

void dns_handle(int tag, short revents) {
  int idx = TAG_IDX(tag);
  if (idx == MAX_PENDING) return take_query();
  struct pending *q = &pending[idx];
  if (!q->used) return;
  if (q->qsent < q->qlen) {
    ssize_t n = send(q->fd, q->query + q->qsent, q->qlen - q->qsent, MSG_NOSIGNAL);
    if (n > 0) q->qsent += (size_t)n;
    else if (n < 0 && errno != EAGAIN) release(q);
    return;
  }
  if (!(revents & (POLLIN | POLLHUP | POLLERR))) return;
  ssize_t n = recv(q->fd, q->answer + q->alen, sizeof q->answer - q->alen, 0);
  if (n <= 0) {
    if (n < 0 && errno == EAGAIN) return;
    return release(q);
  }
  q->alen += (size_t)n;
  if (q->alen < 2) return;
  size_t want = ((size_t)q->answer[0] << 8) | q->answer[1];
  if (q->alen < 2 + want) return;
  sendto(udp_fd, q->answer + 2, want, 0, (struct sockaddr *)&q->client, sizeof q->client);
  release(q);
}

int64_t dns_next_deadline(void) {
  int64_t next = 0;
  for (int i = 0; i < MAX_PENDING; i++)
    if (pending[i].used && (!next || pending[i].deadline < next)) next = pending[i].deadline;
  return next;
}

void dns_check_deadlines(void) {
  int64_t t = now_ms();
  for (int i = 0; i < MAX_PENDING; i++)
    if (pending[i].used && t >= pending[i].deadline) release(&pending[i]);
}
