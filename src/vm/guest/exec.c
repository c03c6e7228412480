/*
 * Command sessions: EXEC starts a process in its own session (process group), with stdout/stderr
 * streamed to the host and stdin fed from STDIN frames, or, asked for a terminal, on a pseudo-terminal
 * whose one output is stdout and whose window RESIZE sets; EXIT is sent once the process is reaped and
 * its pipes drained. It never blocks: every pipe is non-blocking and stdin is buffered. It never
 * lets a bad EXEC kill the agent: errors become an ERROR or EXIT frame for that stream.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "agent.h"

#define MAX_SESSIONS 64

struct session {
  int used;
  uint32_t stream;
  pid_t pid;
  int in_fd, out_fd, err_fd;
  struct buf in_pending;
  uint32_t in_uncredited; /* stdin bytes written (or dropped) since the last STDIN_CREDIT */
  uint32_t out_unacked;   /* output bytes sent that the host has not credited yet */
  int in_eof;
  int tty_fd; /* the pseudo-terminal's master (also behind in_fd and out_fd), or -1 */
  int64_t deadline;
  int timed_out;
  int reaped;
  int status;
};

static struct session sessions[MAX_SESSIONS];
extern char **environ;

static struct session *find(uint32_t stream) {
  for (int i = 0; i < MAX_SESSIONS; i++)
    if (sessions[i].used && sessions[i].stream == stream) return &sessions[i];
  return NULL;
}

static void close_fd(int *fd) {
  if (*fd >= 0) close(*fd);
  *fd = -1;
}

static char *dup_str(const uint8_t *v, uint32_t len) {
  char *s = malloc(len + 1);
  if (!s) abort();
  memcpy(s, v, len);
  s[len] = 0;
  return s;
}

/* Final environment: defaults, then CONFIG env, then EXEC env; a later KEY= replaces an earlier one. */
static void env_set(char **env, size_t *n, char *kv) {
  size_t kl = strcspn(kv, "=");
  for (size_t i = 0; i < *n; i++)
    if (strncmp(env[i], kv, kl) == 0 && env[i][kl] == '=') {
      env[i] = kv;
      return;
    }
  env[(*n)++] = kv;
}

/* The terminal's end the command gets: opened after setsid, it becomes the session's controlling tty. */
static int open_tty_slave(const char *name) {
  int fd = open(name, O_RDWR);
  if (fd >= 0) ioctl(fd, TIOCSCTTY, 0);
  return fd;
}

static void child_exec(char **argv, char **envp, const char *cwd, uid_t uid, gid_t gid, int in, int out,
                       int err, const char *tty) {
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, NULL);
  signal(SIGPIPE, SIG_DFL);
  setsid();
  if (tty) {
    int t = open_tty_slave(tty);
    if (t < 0) _exit(126);
    /* The terminal is the command's, as login gives it: a program that opens it by name (ttyname)
       must be able to, whatever uid it runs as. */
    if (fchown(t, uid, (gid_t)-1) != 0) _exit(126);
    in = out = err = t;
  }
  dup2(in, 0);
  dup2(out, 1);
  dup2(err, 2);
  syscall(SYS_close_range, 3, ~0U, 0);
  if (cwd && chdir(cwd) != 0) {
    dprintf(2, "microagent: cannot change directory to %s: %s\n", cwd, strerror(errno));
    _exit(126);
  }
  /* The open-file limits systemd and Docker give their services (soft 1024 for programs that pass
     fds to select(); hard 524288, so one that needs more, as Go's runtime does, can raise it).
     The kernel gives init 1024/4096, which a build or a language server outgrows. Root may raise. */
  setrlimit(RLIMIT_NOFILE, &(struct rlimit){.rlim_cur = 1024, .rlim_max = 524288});
  if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) {
    dprintf(2, "microagent: cannot switch to uid %u gid %u: %s\n", uid, gid, strerror(errno));
    _exit(126);
  }
  environ = envp; /* execvp searches the PATH of the new environment */
  execvp(argv[0], argv);
  int e = errno;
  if (e == ENOENT)
    dprintf(2, "microagent: %s: command not found\n", argv[0]);
  else
    dprintf(2, "microagent: %s: %s\n", argv[0], strerror(e));
  _exit(e == ENOENT ? 127 : 126);
}

void exec_start(uint32_t stream, const uint8_t *payload, size_t len) {
  if (find(stream)) return send_error(stream, "stream %u is already running", stream);
  struct session *s = NULL;
  for (int i = 0; i < MAX_SESSIONS && !s; i++)
    if (!sessions[i].used) s = &sessions[i];
  if (!s) return send_error(stream, "too many concurrent commands (max %d)", MAX_SESSIONS);

  /* Arrays sized from the payload itself: one pass to count records, so no count can overflow. */
  size_t records = 0;
  {
    struct tlv_iter count = {payload, len};
    uint8_t k;
    const uint8_t *cv;
    uint32_t cl;
    while (tlv_next(&count, &k, &cv, &cl) == 1) records++;
  }
  static char *defaults[] = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                             "HOME=/root", "TERM=dumb", "LANG=C.UTF-8"};
  size_t ndefaults = sizeof defaults / sizeof *defaults;
  char **argv = calloc(records + 1, sizeof *argv);
  char **envp = calloc(ndefaults + config_env_len + records + 1, sizeof *envp);
  char **owned = calloc(records + 1, sizeof *owned);
  if (!argv || !envp || !owned) abort();
  size_t argc = 0, envc = 0;
  char *cwd = NULL;
  uint32_t uid = 0, gid = 0, timeout_ms = 0;
  int want_stdin = 0, bad = 0;
  struct winsize ws = {0};
  int want_tty = 0;
  for (size_t i = 0; i < ndefaults; i++) env_set(envp, &envc, defaults[i]);
  for (size_t i = 0; i < config_env_len; i++) env_set(envp, &envc, config_env[i]);

  struct tlv_iter it = {payload, len};
  uint8_t key;
  const uint8_t *v;
  uint32_t vl;
  int r;
  size_t nowned = 0;
  while ((r = tlv_next(&it, &key, &v, &vl)) == 1 && !bad) {
    switch (key) {
      case EX_ARG:
        argv[argc++] = owned[nowned++] = dup_str(v, vl);
        break;
      case EX_ENV:
        if (!memchr(v, '=', vl)) { bad = 1; break; }
        env_set(envp, &envc, owned[nowned++] = dup_str(v, vl));
        break;
      case EX_CWD: if (!cwd) cwd = owned[nowned++] = dup_str(v, vl); break;
      case EX_UID: if (vl == 4) uid = be32(v); break;
      case EX_GID: if (vl == 4) gid = be32(v); break;
      case EX_TIMEOUT_MS: if (vl == 4) timeout_ms = be32(v); break;
      case EX_STDIN: want_stdin = vl >= 1 && v[0]; break;
      case EX_TTY:
        if (vl == 4) {
          want_tty = 1;
          ws.ws_row = (unsigned short)((v[0] << 8) | v[1]);
          ws.ws_col = (unsigned short)((v[2] << 8) | v[3]);
        }
        break;
      default: break; /* unknown keys are ignored: newer hosts may send more */
    }
  }
  argv[argc] = NULL;
  envp[envc] = NULL;
  int in_pipe[2] = {-1, -1}, out_pipe[2] = {-1, -1}, err_pipe[2] = {-1, -1};
  int master = -1;
  char tty_name[64];
  if (r < 0 || bad || argc == 0) {
    send_error(stream, argc == 0 ? "EXEC without argv" : "malformed EXEC payload");
    goto done;
  }
  if (want_tty) {
    /* The terminal is both ends: what the command reads comes from in_fd, all it writes leaves by out_fd. */
    if ((master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0 || grantpt(master) != 0 || unlockpt(master) != 0 ||
        ptsname_r(master, tty_name, sizeof tty_name) != 0 || ioctl(master, TIOCSWINSZ, &ws) != 0 ||
        (out_pipe[0] = fcntl(master, F_DUPFD_CLOEXEC, 0)) < 0 || (in_pipe[1] = fcntl(master, F_DUPFD_CLOEXEC, 0)) < 0) {
      send_error(stream, "cannot open a terminal: %s", strerror(errno));
      goto fail;
    }
  } else if ((want_stdin ? pipe2(in_pipe, O_CLOEXEC) : ((in_pipe[0] = open("/dev/null", O_RDONLY | O_CLOEXEC)) < 0 ? -1 : 0)) != 0 ||
             pipe2(out_pipe, O_CLOEXEC) != 0 || pipe2(err_pipe, O_CLOEXEC) != 0) {
    send_error(stream, "cannot create pipes: %s", strerror(errno));
    goto fail;
  }
  pid_t pid = fork();
  if (pid < 0) {
    send_error(stream, "fork: %s", strerror(errno));
    goto fail;
  }
  if (pid == 0) child_exec(argv, envp, cwd, uid, gid, in_pipe[0], out_pipe[1], err_pipe[1], want_tty ? tty_name : NULL);
  memset(s, 0, sizeof *s);
  s->used = 1;
  s->stream = stream;
  s->pid = pid;
  s->tty_fd = master;
  if (in_pipe[0] >= 0) close(in_pipe[0]);
  s->in_fd = want_stdin || want_tty ? in_pipe[1] : -1;
  if (out_pipe[1] >= 0) close(out_pipe[1]);
  if (err_pipe[1] >= 0) close(err_pipe[1]);
  s->out_fd = out_pipe[0];
  s->err_fd = err_pipe[0];
  fcntl(s->out_fd, F_SETFL, O_NONBLOCK);
  if (s->err_fd >= 0) fcntl(s->err_fd, F_SETFL, O_NONBLOCK);
  if (s->in_fd >= 0) fcntl(s->in_fd, F_SETFL, O_NONBLOCK);
  s->deadline = timeout_ms ? now_ms() + timeout_ms : 0;
  goto done;
fail:
  for (int i = 0; i < 2; i++) {
    if (in_pipe[i] >= 0) close(in_pipe[i]);
    if (out_pipe[i] >= 0) close(out_pipe[i]);
    if (err_pipe[i] >= 0) close(err_pipe[i]);
  }
  if (master >= 0) close(master);
done:
  for (size_t i = 0; i < nowned; i++) free(owned[i]); /* the child has its own copy after fork */
  free(owned);
  free(argv);
  free(envp);
}

/* Gives the host back the window for bytes the command has taken (or that were dropped), so stdin
   the command does not read yet waits on the host, never here: PID 1's memory stays bounded. */
static void credit_stdin(struct session *s, int all) {
  if (s->in_uncredited == 0 || (!all && s->in_uncredited < STDIN_WINDOW / 4)) return;
  uint8_t n[4];
  put_be32(n, s->in_uncredited);
  send_frame(MSG_STDIN_CREDIT, s->stream, n, sizeof n);
  s->in_uncredited = 0;
}

static void flush_stdin(struct session *s) {
  while (s->in_fd >= 0 && s->in_pending.len) {
    ssize_t n = write(s->in_fd, s->in_pending.data, s->in_pending.len);
    if (n > 0) {
      buf_consume(&s->in_pending, (size_t)n);
      s->in_uncredited += (uint32_t)n;
    } else if (n < 0 && errno == EAGAIN) {
      break;
    } else {
      s->in_uncredited += (uint32_t)s->in_pending.len;
      s->in_pending.len = 0; /* reader gone: drop what it will never read */
      close_fd(&s->in_fd);
    }
  }
  credit_stdin(s, s->in_pending.len == 0);
  if (s->in_eof && s->in_pending.len == 0) close_fd(&s->in_fd);
}

void exec_stdin(uint32_t stream, const uint8_t *data, size_t len, int eof) {
  struct session *s = find(stream);
  if (!s) return; /* stdin of a finished command */
  if (s->in_fd < 0) {
    /* Started without stdin, or its reader is gone: nothing to write, the window comes straight back. */
    s->in_uncredited += (uint32_t)len;
    return credit_stdin(s, 1);
  }
  buf_append(&s->in_pending, data, len);
  if (eof) s->in_eof = 1;
  flush_stdin(s);
}

void exec_output_credit(uint32_t stream, uint32_t bytes) {
  struct session *s = find(stream);
  if (s) s->out_unacked = bytes >= s->out_unacked ? 0 : s->out_unacked - bytes;
}

void exec_resize(uint32_t stream, const uint8_t *payload, size_t len) {
  struct session *s = find(stream);
  if (!s || s->tty_fd < 0) return; /* a command without a terminal, or one that has ended */
  if (len != 4) return send_error(stream, "RESIZE payload must be 4 bytes");
  struct winsize ws = {.ws_row = (unsigned short)((payload[0] << 8) | payload[1]),
                       .ws_col = (unsigned short)((payload[2] << 8) | payload[3])};
  ioctl(s->tty_fd, TIOCSWINSZ, &ws); /* the kernel sends the foreground group SIGWINCH */
}

void exec_signal(uint32_t stream, int signo) {
  struct session *s = find(stream);
  if (!s || s->reaped) return;
  if (signo <= 0 || signo >= 65) return send_error(stream, "invalid signal %d", signo);
  kill(-s->pid, signo);
}

/* Reads what a pipe holds now; returns 0 at EOF or error, 1 while it may have more. */
static int pump(struct session *s, int fd, uint8_t type) {
  uint8_t chunk[32768];
  ssize_t n = read(fd, chunk, sizeof chunk);
  if (n > 0) {
    send_frame(type, s->stream, chunk, (size_t)n);
    s->out_unacked += (uint32_t)n;
    return 1;
  }
  if (n < 0 && (errno == EAGAIN || errno == EINTR)) return 1;
  return 0;
}

/* At the command's end, whatever its pipe still holds (a pipe's worth at most) goes out past the window. */
static void drain(struct session *s, int fd, uint8_t type) {
  for (;;) {
    struct pollfd p = {fd, POLLIN, 0};
    if (fd < 0 || poll(&p, 1, 0) <= 0 || !(p.revents & POLLIN) || !pump(s, fd, type)) return;
  }
}

static void finish(struct session *s) {
  /* Everything the process wrote before it exited is in the pipes now: drain it, then EXIT. */
  drain(s, s->out_fd, MSG_STDOUT);
  drain(s, s->err_fd, MSG_STDERR);
  struct buf b = {0};
  if (WIFEXITED(s->status)) tlv_put_u32(&b, EXIT_CODE, (uint32_t)WEXITSTATUS(s->status));
  if (WIFSIGNALED(s->status)) tlv_put_u32(&b, EXIT_SIGNAL, (uint32_t)WTERMSIG(s->status));
  if (s->timed_out) {
    uint8_t one = 1;
    tlv_put(&b, EXIT_TIMED_OUT, &one, 1);
  }
  send_frame(MSG_EXIT, s->stream, b.data, b.len);
  buf_free(&b);
  close_fd(&s->in_fd);
  close_fd(&s->out_fd);
  close_fd(&s->err_fd);
  close_fd(&s->tty_fd);
  buf_free(&s->in_pending);
  s->used = 0;
}

void exec_on_sigchld(void) {
  int status;
  pid_t pid;
  while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
    for (int i = 0; i < MAX_SESSIONS; i++) {
      struct session *s = &sessions[i];
      if (s->used && s->pid == pid) {
        s->reaped = 1;
        s->status = status;
        finish(s);
      }
    }
  }
}

int exec_poll_fds(struct pollfd *fds, int max, int *tags) {
  int n = 0;
  int backpressure = host_out_pending() > OUT_HIGH_WATER;
  for (int i = 0; i < MAX_SESSIONS && n + 3 <= max; i++) {
    struct session *s = &sessions[i];
    if (!s->used) continue;
    int read_output = !backpressure && s->out_unacked < OUTPUT_WINDOW;
    if (s->out_fd >= 0 && read_output) { fds[n] = (struct pollfd){s->out_fd, POLLIN, 0}; tags[n++] = TAG(1, i * 4 + 0); }
    if (s->err_fd >= 0 && read_output) { fds[n] = (struct pollfd){s->err_fd, POLLIN, 0}; tags[n++] = TAG(1, i * 4 + 1); }
    if (s->in_fd >= 0 && s->in_pending.len) { fds[n] = (struct pollfd){s->in_fd, POLLOUT, 0}; tags[n++] = TAG(1, i * 4 + 2); }
  }
  return n;
}

void exec_handle(int tag, short revents) {
  int idx = TAG_IDX(tag);
  struct session *s = &sessions[idx / 4];
  if (!s->used) return;
  switch (idx % 4) {
    case 0: if (!pump(s, s->out_fd, MSG_STDOUT)) close_fd(&s->out_fd); break;
    case 1: if (!pump(s, s->err_fd, MSG_STDERR)) close_fd(&s->err_fd); break;
    case 2: if (revents & (POLLOUT | POLLERR | POLLHUP)) flush_stdin(s); break;
    default: break;
  }
}

int64_t exec_next_deadline(void) {
  int64_t next = 0;
  for (int i = 0; i < MAX_SESSIONS; i++) {
    struct session *s = &sessions[i];
    if (s->used && s->deadline && !s->timed_out && (!next || s->deadline < next)) next = s->deadline;
  }
  return next;
}

void exec_check_deadlines(void) {
  int64_t t = now_ms();
  for (int i = 0; i < MAX_SESSIONS; i++) {
    struct session *s = &sessions[i];
    if (s->used && s->deadline && !s->timed_out && t >= s->deadline) {
      s->timed_out = 1;
      kill(-s->pid, SIGKILL);
    }
  }
}

void exec_kill_all(void) {
  for (int i = 0; i < MAX_SESSIONS; i++)
    if (sessions[i].used) kill(-sessions[i].pid, SIGKILL);
}
