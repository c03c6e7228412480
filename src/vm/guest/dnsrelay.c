/*
 * Guest-local DNS relay: queries to 127.0.0.53:53 (the only nameserver in /etc/resolv.conf) go to
 * the workspace resolver's fixed guest address, which QEMU forwards to the host resolver socket.
 * UDP queries are forwarded one TCP connection each (RFC 7766 two-byte length framing); an answer
 * larger than the client can take over UDP (512 bytes, or its EDNS payload size) comes back truncated
 * (TC set, question only), as from any server, and the client asks again over TCP, which is spliced
 * to the same upstream. It never answers a query itself and never forwards anywhere but the
 * configured upstream; a query without an answer in time is dropped (the client retries).
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
#define MAX_STREAMS 16
/* An idle TCP client is closed after this long, as the host's DNS server does (RFC 7766 6.2.3). */
#define STREAM_IDLE_MS 10000
#define STREAM_BUF 4096
/* Poll tags (kind 4): pending UDP queries 0..MAX_PENDING-1, then the two listeners, then streams. */
#define TAG_UDP MAX_PENDING
#define TAG_TCP (MAX_PENDING + 1)
#define TAG_STREAM0 (MAX_PENDING + 2)

struct pending {
  int used;
  int fd;
  struct sockaddr_in client;
  uint8_t query[2 + 512];
  size_t qlen, qsent;
  uint8_t answer[2 + 65535];
  size_t alen;
  /* The largest answer the client takes over UDP, and where its question section ends. */
  size_t limit, question_end;
  int64_t deadline;
};

/* A guest client's DNS-over-TCP connection, spliced to the upstream: side 0 the client, 1 upstream. */
struct stream {
  int used;
  int fd[2];
  uint8_t buf[2][STREAM_BUF]; /* read from fd[i], to be written to fd[1 - i] */
  size_t len[2], off[2];
  int eof[2];
  int64_t deadline;
};

static int udp_fd = -1, tcp_fd = -1;
static struct sockaddr_in upstream;
static struct pending pending[MAX_PENDING];
static struct stream streams[MAX_STREAMS];

static int bind_local(int type) {
  int fd = socket(AF_INET, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(53)};
  inet_pton(AF_INET, "127.0.0.53", &in.sin_addr);
  if (fd >= 0 && type == SOCK_STREAM) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, (struct sockaddr *)&in, sizeof in) != 0 || (type == SOCK_STREAM && listen(fd, 16) != 0)) {
    logmsg("dns relay bind 127.0.0.53:53 (%s): %s", type == SOCK_STREAM ? "tcp" : "udp", strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  return fd;
}

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
  if (udp_fd < 0) udp_fd = bind_local(SOCK_DGRAM);
  if (tcp_fd < 0) tcp_fd = bind_local(SOCK_STREAM);
}

static void release(struct pending *q) {
  close(q->fd);
  q->used = 0;
}

/* Where the question section of a query ends, and the UDP answer size it asks for: its EDNS OPT
   record's payload size (RFC 6891 6.2.5, at least 512), or 512 without one. Queries carry no name
   compression; anything unexpected gets the classic 512. 0 when the question cannot be walked. */
static size_t question_end(const uint8_t *q, size_t n, size_t *limit) {
  *limit = 512;
  unsigned qd = ((unsigned)q[4] << 8) | q[5];
  size_t i = 12;
  for (unsigned k = 0; k < qd; k++) {
    while (i < n && q[i] != 0) {
      if (q[i] & 0xc0) return 0;
      i += 1u + q[i];
    }
    i += 1 + 4;
    if (i > n) return 0;
  }
  int only_opt = q[6] == 0 && q[7] == 0 && q[8] == 0 && q[9] == 0 && q[10] == 0 && q[11] == 1;
  if (only_opt && i + 11 <= n && q[i] == 0 && q[i + 1] == 0 && q[i + 2] == 41) {
    size_t size = ((size_t)q[i + 3] << 8) | q[i + 4];
    if (size > 512) *limit = size;
  }
  return i;
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
  q->question_end = question_end(msg, (size_t)n, &q->limit);
  q->qsent = 0;
  q->alen = 0;
  q->deadline = now_ms() + QUERY_TIMEOUT_MS;
}

/* What side i of a stream waits for: input while its buffer is empty, output while the other side's
   bytes wait for it. Nothing (the fd is left out of the poll, which would report a hangup forever). */
static short stream_events(const struct stream *st, int i) {
  short ev = 0;
  if (!st->eof[i] && st->len[i] == 0) ev |= POLLIN;
  if (st->off[1 - i] < st->len[1 - i]) ev |= POLLOUT;
  return ev;
}

int dns_poll_fds(struct pollfd *fds, int max, int *tags) {
  int n = 0;
  if (udp_fd >= 0) {
    fds[n] = (struct pollfd){udp_fd, POLLIN, 0};
    tags[n++] = TAG(4, TAG_UDP);
  }
  if (tcp_fd >= 0 && n < max) {
    fds[n] = (struct pollfd){tcp_fd, POLLIN, 0};
    tags[n++] = TAG(4, TAG_TCP);
  }
  for (int i = 0; i < MAX_PENDING && n < max; i++) {
    if (!pending[i].used) continue;
    fds[n] = (struct pollfd){pending[i].fd, pending[i].qsent < pending[i].qlen ? POLLOUT : POLLIN, 0};
    tags[n++] = TAG(4, i);
  }
  for (int i = 0; i < MAX_STREAMS; i++) {
    for (int side = 0; side < 2 && streams[i].used && n < max; side++) {
      short ev = stream_events(&streams[i], side);
      if (!ev) continue;
      fds[n] = (struct pollfd){streams[i].fd[side], ev, 0};
      tags[n++] = TAG(4, TAG_STREAM0 + 2 * i + side);
    }
  }
  return n;
}

static void stream_close(struct stream *st) {
  close(st->fd[0]);
  close(st->fd[1]);
  st->used = 0;
}

static void stream_accept(void) {
  int client = accept4(tcp_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (client < 0) return;
  struct stream *st = NULL;
  for (int i = 0; i < MAX_STREAMS && !st; i++)
    if (!streams[i].used) st = &streams[i];
  int up = st ? socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
  if (up < 0 || (connect(up, (struct sockaddr *)&upstream, sizeof upstream) != 0 && errno != EINPROGRESS)) {
    if (up >= 0) close(up);
    close(client);
    return;
  }
  *st = (struct stream){.used = 1, .fd = {client, up}, .deadline = now_ms() + STREAM_IDLE_MS};
}

/* Moves bytes for side i: writes the other side's waiting bytes to it, reads its own. Each side's
   end of input is passed on as a half-close once its bytes are out; both ended and flushed, or an
   error on either, closes the stream. */
static void stream_handle(struct stream *st, int i, short revents) {
  int o = 1 - i;
  if ((revents & POLLOUT) && st->off[o] < st->len[o]) {
    ssize_t n = send(st->fd[i], st->buf[o] + st->off[o], st->len[o] - st->off[o], MSG_NOSIGNAL);
    if (n < 0 && errno != EAGAIN) return stream_close(st);
    if (n > 0) st->off[o] += (size_t)n;
    if (st->off[o] == st->len[o]) {
      st->off[o] = st->len[o] = 0;
      if (st->eof[o]) shutdown(st->fd[i], SHUT_WR);
    }
  }
  if ((revents & (POLLIN | POLLHUP | POLLERR)) && !st->eof[i] && st->len[i] == 0) {
    ssize_t n = recv(st->fd[i], st->buf[i], STREAM_BUF, 0);
    if (n < 0 && errno != EAGAIN) return stream_close(st);
    if (n > 0) {
      st->len[i] = (size_t)n;
      st->deadline = now_ms() + STREAM_IDLE_MS;
    } else if (n == 0) {
      st->eof[i] = 1;
      shutdown(st->fd[o], SHUT_WR);
    }
  }
  if (st->eof[0] && st->eof[1] && !st->len[0] && !st->len[1]) stream_close(st);
}

void dns_handle(int tag, short revents) {
  int idx = TAG_IDX(tag);
  if (idx == TAG_UDP) return take_query();
  if (idx == TAG_TCP) return stream_accept();
  if (idx >= TAG_STREAM0) {
    struct stream *st = &streams[(idx - TAG_STREAM0) / 2];
    if (st->used) stream_handle(st, (idx - TAG_STREAM0) % 2, revents);
    return;
  }
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
  const uint8_t *reply = q->answer + 2;
  uint8_t truncated[512];
  if (want > q->limit) {
    /* Too big for the client over UDP: the header with TC set and the question alone (RFC 1035
       4.2.1), so it asks again over TCP. A question we could not walk gets no answer at all. */
    if (q->question_end == 0 || want < 12 || q->question_end > sizeof truncated) return release(q);
    memcpy(truncated, reply, 12);
    truncated[2] |= 0x02;
    memset(truncated + 6, 0, 6);
    memcpy(truncated + 12, q->query + 2 + 12, q->question_end - 12);
    reply = truncated;
    want = q->question_end;
  }
  sendto(udp_fd, reply, want, 0, (struct sockaddr *)&q->client, sizeof q->client);
  release(q);
}

int64_t dns_next_deadline(void) {
  int64_t next = 0;
  for (int i = 0; i < MAX_PENDING; i++)
    if (pending[i].used && (!next || pending[i].deadline < next)) next = pending[i].deadline;
  for (int i = 0; i < MAX_STREAMS; i++)
    if (streams[i].used && (!next || streams[i].deadline < next)) next = streams[i].deadline;
  return next;
}

void dns_check_deadlines(void) {
  int64_t t = now_ms();
  for (int i = 0; i < MAX_PENDING; i++)
    if (pending[i].used && t >= pending[i].deadline) release(&pending[i]);
  for (int i = 0; i < MAX_STREAMS; i++)
    if (streams[i].used && t >= streams[i].deadline) stream_close(&streams[i]);
}
