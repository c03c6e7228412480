/*
 * Guest agent entry point and event loop. Boots the guest as PID 1, then serves the host channel:
 * reads frames [u32 len][u8 type][u32 stream][payload] from the virtio-serial port, dispatches them,
 * and writes replies through one non-blocking output buffer. It must never exit or block: a bad
 * frame gets an ERROR reply, an oversized one is skipped, and everything else keeps running.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/reboot.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"

#define MAX_POLL 640

static int port_fd = -1;
static struct buf host_in, host_out;
static size_t discard_left;
static int64_t port_quiet_until;
static int has_net;
/* Set by STOP: power off as soon as every process has exited (they got SIGTERM). */
static int stopping;

int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void logmsg(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(line, sizeof line - 1, fmt, ap);
  va_end(ap);
  if (n < 0) return;
  if ((size_t)n > sizeof line - 2) n = sizeof line - 2;
  line[n++] = '\n';
  dprintf(2, "microagent-guest: %.*s", n, line);
}

void send_frame(uint8_t type, uint32_t stream, const void *payload, size_t len) {
  uint8_t h[FRAME_HEADER];
  put_be32(h, (uint32_t)len);
  h[4] = type;
  put_be32(h + 5, stream);
  buf_append(&host_out, h, sizeof h);
  buf_append(&host_out, payload, len);
}

void send_error(uint32_t stream, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  send_frame(MSG_ERROR, stream, msg, n < 0 ? 0 : (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

size_t host_out_pending(void) { return host_out.len; }

static void flush_host(void) {
  while (host_out.len) {
    ssize_t n = write(port_fd, host_out.data, host_out.len);
    if (n <= 0) return;
    buf_consume(&host_out, (size_t)n);
  }
}

static void send_hello(void) {
  struct buf b = {0};
  struct utsname u;
  uname(&u);
  tlv_put_u32(&b, HELLO_VERSION, AGENT_PROTOCOL_VERSION);
  tlv_put(&b, HELLO_KERNEL, u.release, (uint32_t)strlen(u.release));
  uint8_t net = (uint8_t)has_net;
  tlv_put(&b, HELLO_HAS_NET, &net, 1);
  send_frame(MSG_HELLO, 0, b.data, b.len);
  buf_free(&b);
}

static void halt_now(void) {
  send_frame(MSG_HALTING, 0, NULL, 0);
  fcntl(port_fd, F_SETFL, 0);
  flush_host();
  boot_poweroff();
}

static void dispatch(uint8_t type, uint32_t stream, const uint8_t *p, size_t len) {
  switch (type) {
    case MSG_PING: send_hello(); break;
    case MSG_CONFIG: apply_config(stream, p, len); break;
    case MSG_EXEC: exec_start(stream, p, len); break;
    case MSG_STDIN: exec_stdin(stream, p, len, 0); break;
    case MSG_STDIN_EOF: exec_stdin(stream, p, 0, 1); break;
    case MSG_OUTPUT_CREDIT:
      if (len == 4) exec_output_credit(stream, be32(p));
      break;
    case MSG_SIGNAL:
      if (len == 4) exec_signal(stream, (int)be32(p));
      else send_error(stream, "SIGNAL payload must be 4 bytes");
      break;
    case MSG_RESIZE: exec_resize(stream, p, len); break;
    case MSG_HALT: halt_now(); break;
    case MSG_STOP:
      stopping = 1;
      kill(-1, SIGTERM);
      break;
    case MSG_T_OPENED:
    case MSG_T_DATA:
    case MSG_T_EOF:
    case MSG_T_CLOSE:
    case MSG_T_CREDIT: tunnel_from_host(type, stream, p, len); break;
    default: send_error(stream, "unknown frame type 0x%02x", type); break;
  }
}

static void read_host(void) {
  uint8_t chunk[65536];
  ssize_t n = read(port_fd, chunk, sizeof chunk);
  if (n <= 0) {
    /* Host side not connected: the port reports hangup until it is; do not spin on it. */
    if (n == 0 || (errno != EAGAIN && errno != EINTR)) port_quiet_until = now_ms() + 100;
    return;
  }
  size_t off = 0;
  if (discard_left) {
    size_t skip = discard_left < (size_t)n ? discard_left : (size_t)n;
    discard_left -= skip;
    off = skip;
  }
  buf_append(&host_in, chunk + off, (size_t)n - off);
  while (host_in.len >= FRAME_HEADER && !discard_left) {
    uint32_t len = be32(host_in.data);
    uint8_t type = host_in.data[4];
    uint32_t stream = be32(host_in.data + 5);
    if (len > FRAME_MAX_PAYLOAD) {
      send_error(stream, "frame of %u bytes exceeds the %u byte limit; skipped", len, FRAME_MAX_PAYLOAD);
      size_t have = host_in.len;
      size_t total = (size_t)FRAME_HEADER + len;
      buf_consume(&host_in, have < total ? have : total);
      discard_left = have < total ? total - have : 0;
      continue;
    }
    if (host_in.len < FRAME_HEADER + len) break;
    dispatch(type, stream, host_in.data + FRAME_HEADER, len);
    buf_consume(&host_in, FRAME_HEADER + len);
  }
}

static int signal_fd(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGCHLD);
  sigprocmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);
  return signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
}

static void serve(int sfd) {
  struct pollfd fds[MAX_POLL];
  int tags[MAX_POLL];
  for (;;) {
    int n = 0;
    int64_t t = now_ms();
    short port_events = (short)(host_out.len ? POLLOUT : 0);
    if (t >= port_quiet_until) port_events |= POLLIN;
    /* While quiet, leave the port out: a disconnected port reports POLLHUP whatever we ask for. */
    fds[n] = (struct pollfd){t >= port_quiet_until ? port_fd : -1, port_events, 0};
    tags[n++] = TAG(0, 0);
    fds[n] = (struct pollfd){sfd, POLLIN, 0};
    tags[n++] = TAG(0, 1);
    n += exec_poll_fds(fds + n, MAX_POLL - n, tags + n);
    n += tunnel_poll_fds(fds + n, MAX_POLL - n, tags + n);
    n += dns_poll_fds(fds + n, MAX_POLL - n, tags + n);
    int64_t wake = t + 1000;
    int64_t d = exec_next_deadline();
    if (d && d < wake) wake = d;
    d = dns_next_deadline();
    if (d && d < wake) wake = d;
    if (port_quiet_until > t && port_quiet_until < wake) wake = port_quiet_until;
    int timeout = wake > t ? (int)(wake - t) : 0;
    if (poll(fds, (nfds_t)n, timeout) < 0 && errno != EINTR) logmsg("poll: %s", strerror(errno));
    for (int i = 0; i < n; i++) {
      short re = fds[i].revents;
      if (!re) continue;
      switch (TAG_KIND(tags[i])) {
        case 0:
          if (TAG_IDX(tags[i]) == 1) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == sizeof si) {
            }
            exec_on_sigchld();
          } else {
            if (re & POLLOUT) flush_host();
            if (re & (POLLIN | POLLHUP | POLLERR)) read_host();
            if ((re & POLLHUP) && !(re & POLLIN)) port_quiet_until = now_ms() + 100;
          }
          break;
        case 1: exec_handle(tags[i], re); break;
        case 2:
        case 3: tunnel_handle(tags[i], re); break;
        case 4: dns_handle(tags[i], re); break;
        default: break;
      }
    }
    exec_check_deadlines();
    dns_check_deadlines();
    flush_host();
    if (stopping) {
      siginfo_t info;
      /* WNOWAIT: look without reaping, so exec sessions still collect their children's status. */
      if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD) halt_now();
    }
  }
}

int main(int argc, char **argv) {
  const char *name = argc > 0 ? strrchr(argv[0], '/') : NULL;
  name = name ? name + 1 : argc > 0 ? argv[0] : "";
  if (strcmp(name, CONNECT_HELPER) == 0) return connect_main(argc, argv);
  /* Without a console the kernel starts init with no fds 0-2; fill them so that no later open()
     (the agent port!) lands on fd 2, where log lines would corrupt the protocol. */
  for (int fd = 0; fd < 3; fd++) {
    if (fcntl(fd, F_GETFD) >= 0) continue;
    int c = open("/dev/console", O_RDWR);
    if (c < 0) c = open("/dev/null", O_RDWR);
    if (c >= 0 && c != fd) {
      dup2(c, fd);
      close(c);
    }
  }
  if (boot_is_probe()) {
    logmsg("probe ok");
    reboot(RB_AUTOBOOT);
  }
  boot_load_modules();
  boot_switch_root();
  boot_mount_runtime();
  net_lo_up();
  has_net = net_setup();
  int sfd = signal_fd();
  port_fd = open_agent_port();
  if (port_fd < 0) {
    logmsg("agent port microagent.agent not found; powering off");
    boot_poweroff();
  }
  logmsg("ready (network: %s)", has_net ? "eth0" : "none");
  send_hello();
  serve(sfd);
  return 0;
}
