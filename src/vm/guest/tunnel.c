/*
 * Mediation channel fallback (no vsock): the agent listens on 127.0.0.1:PORT and on
 * /run/microagent/mediation/PORT.sock for each mediation port the host configured, and carries each
 * accepted connection over the agent channel as a tunnel stream (T_OPEN/T_OPENED/T_DATA/T_EOF/
 * T_CLOSE), with credit-based flow control so one busy stream cannot starve the channel. It never
 * reads guest data before the host opened the stream, and never sends beyond the host's credit.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"

#define MAX_LISTENERS 32
#define MAX_CONNS 128
#define CREDIT_BATCH (32u * 1024u)

struct listener {
  int fd;
  uint16_t port;
};

struct conn {
  int used;
  uint32_t stream;
  int fd;
  int opened;
  uint32_t peer_credit;
  struct buf to_guest;
  uint32_t unacked;
  int host_eof, guest_eof_sent;
};

static struct listener listeners[MAX_LISTENERS];
static int nlisteners;
static struct conn conns[MAX_CONNS];
static uint32_t next_stream = 1;

static void add_listener(int fd, uint16_t port) {
  if (nlisteners >= MAX_LISTENERS) {
    close(fd);
    return;
  }
  listeners[nlisteners++] = (struct listener){fd, port};
}

void tunnel_listen(uint16_t port) {
  for (int i = 0; i < nlisteners; i++)
    if (listeners[i].port == port) return;
  int one = 1;
  int t = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in in = {.sin_family = AF_INET, .sin_port = htons(port)};
  in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  setsockopt(t, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (t >= 0 && bind(t, (struct sockaddr *)&in, sizeof in) == 0 && listen(t, 64) == 0)
    add_listener(t, port);
  else {
    logmsg("mediation listen 127.0.0.1:%u: %s", port, strerror(errno));
    if (t >= 0) close(t);
  }
  mkdir("/run/microagent", 0755);
  mkdir("/run/microagent/mediation", 0755);
  struct sockaddr_un un = {.sun_family = AF_UNIX};
  snprintf(un.sun_path, sizeof un.sun_path, "/run/microagent/mediation/%u.sock", port);
  unlink(un.sun_path);
  int u = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (u >= 0 && bind(u, (struct sockaddr *)&un, sizeof un) == 0 && listen(u, 64) == 0) {
    chmod(un.sun_path, 0666);
    add_listener(u, port);
  } else {
    logmsg("mediation listen %s: %s", un.sun_path, strerror(errno));
    if (u >= 0) close(u);
  }
}

static struct conn *find(uint32_t stream) {
  for (int i = 0; i < MAX_CONNS; i++)
    if (conns[i].used && conns[i].stream == stream) return &conns[i];
  return NULL;
}

static void drop(struct conn *c, int tell_host) {
  if (tell_host) send_frame(MSG_T_CLOSE, c->stream, NULL, 0);
  close(c->fd);
  buf_free(&c->to_guest);
  c->used = 0;
}

static void accept_one(struct listener *l) {
  int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0) return;
  struct conn *c = NULL;
  for (int i = 0; i < MAX_CONNS && !c; i++)
    if (!conns[i].used) c = &conns[i];
  if (!c) {
    close(fd);
    return;
  }
  memset(c, 0, sizeof *c);
  c->used = 1;
  c->fd = fd;
  /* Guest-allocated streams have the top bit set; the host allocates exec streams below it. */
  c->stream = 0x80000000u | (next_stream++ & 0x7fffffffu);
  uint8_t p[4];
  put_be32(p, l->port);
  send_frame(MSG_T_OPEN, c->stream, p, 4);
}

static void maybe_finish(struct conn *c) {
  if (c->guest_eof_sent && c->host_eof && c->to_guest.len == 0) drop(c, 1);
}

static void flush_to_guest(struct conn *c) {
  while (c->to_guest.len) {
    ssize_t n = send(c->fd, c->to_guest.data, c->to_guest.len, MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN) break;
    if (n <= 0) return drop(c, 1);
    buf_consume(&c->to_guest, (size_t)n);
    c->unacked += (uint32_t)n;
  }
  if (c->unacked >= CREDIT_BATCH || (c->unacked && c->to_guest.len == 0)) {
    uint8_t p[4];
    put_be32(p, c->unacked);
    send_frame(MSG_T_CREDIT, c->stream, p, 4);
    c->unacked = 0;
  }
  if (c->host_eof && c->to_guest.len == 0) {
    shutdown(c->fd, SHUT_WR);
    maybe_finish(c);
  }
}

void tunnel_from_host(uint8_t type, uint32_t stream, const uint8_t *payload, size_t len) {
  struct conn *c = find(stream);
  if (!c) return; /* a stream the guest already closed: late frames are expected */
  switch (type) {
    case MSG_T_OPENED:
      c->opened = 1;
      c->peer_credit = TUNNEL_WINDOW;
      break;
    case MSG_T_DATA:
      if (c->to_guest.len + len > 2 * TUNNEL_WINDOW) {
        send_error(stream, "tunnel peer exceeded its window");
        return drop(c, 1);
      }
      buf_append(&c->to_guest, payload, len);
      flush_to_guest(c);
      break;
    case MSG_T_EOF:
      c->host_eof = 1;
      flush_to_guest(c);
      break;
    case MSG_T_CLOSE:
      drop(c, 0);
      break;
    case MSG_T_CREDIT:
      if (len == 4) c->peer_credit += be32(payload);
      break;
    default:
      break;
  }
}

int tunnel_poll_fds(struct pollfd *fds, int max, int *tags) {
  int n = 0;
  for (int i = 0; i < nlisteners && n < max; i++) {
    fds[n] = (struct pollfd){listeners[i].fd, POLLIN, 0};
    tags[n++] = TAG(2, i);
  }
  int backpressure = host_out_pending() > OUT_HIGH_WATER;
  for (int i = 0; i < MAX_CONNS && n < max; i++) {
    struct conn *c = &conns[i];
    if (!c->used) continue;
    short ev = 0;
    if (c->opened && c->peer_credit > 0 && !c->guest_eof_sent && !backpressure) ev |= POLLIN;
    if (c->to_guest.len) ev |= POLLOUT;
    if (!ev) continue;
    fds[n] = (struct pollfd){c->fd, ev, 0};
    tags[n++] = TAG(3, i);
  }
  return n;
}

void tunnel_handle(int tag, short revents) {
  if (TAG_KIND(tag) == 2) return accept_one(&listeners[TAG_IDX(tag)]);
  struct conn *c = &conns[TAG_IDX(tag)];
  if (!c->used) return;
  if (revents & POLLOUT) {
    flush_to_guest(c);
    if (!c->used) return;
  }
  if (!(revents & (POLLIN | POLLHUP | POLLERR)) || !c->opened || c->guest_eof_sent) return;
  uint8_t chunk[32768];
  size_t want = c->peer_credit < sizeof chunk ? c->peer_credit : sizeof chunk;
  if (want == 0) return;
  ssize_t n = recv(c->fd, chunk, want, 0);
  if (n > 0) {
    c->peer_credit -= (uint32_t)n;
    send_frame(MSG_T_DATA, c->stream, chunk, (size_t)n);
  } else if (n == 0) {
    c->guest_eof_sent = 1;
    send_frame(MSG_T_EOF, c->stream, NULL, 0);
    maybe_finish(c);
  } else if (errno != EAGAIN && errno != EINTR) {
    drop(c, 1);
  }
}
