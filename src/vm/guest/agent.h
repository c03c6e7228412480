/*
 * microagent guest agent: shared declarations. The agent is PID 1 in the guest: it boots the root
 * filesystem (boot.c), configures the network (net.c), and serves the framed host protocol over a
 * virtio-serial port (proto.c, main.c): command execution (exec.c), the mediation tunnel (tunnel.c)
 * and the DNS relay (dnsrelay.c). It must never exit (the kernel panics when PID 1 dies) and must
 * never trust a frame: every length is checked before use. Wire format: docs/guest.md.
 */
#ifndef MICROAGENT_AGENT_H
#define MICROAGENT_AGENT_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define AGENT_PROTOCOL_VERSION 2
#define FRAME_HEADER 9
#define FRAME_MAX_PAYLOAD (1u << 20)
#define TUNNEL_WINDOW (256u * 1024u)
/* STDIN bytes the host may send a command before a STDIN_CREDIT; credits go out per quarter window. */
#define STDIN_WINDOW (256u * 1024u)
/* Output bytes a command may send the host before an OUTPUT_CREDIT: a host that cannot pass them on
   stops crediting, and the command blocks on its pipe. */
#define OUTPUT_WINDOW (1024u * 1024u)
#define OUT_HIGH_WATER (4u << 20)

/* Host -> guest */
enum {
  MSG_CONFIG = 0x01,
  MSG_EXEC = 0x02,
  MSG_STDIN = 0x03,
  MSG_STDIN_EOF = 0x04,
  MSG_SIGNAL = 0x05,
  MSG_HALT = 0x06,
  MSG_PING = 0x07,
  MSG_STOP = 0x08, /* graceful: SIGTERM everything, power off once no process is left; never escalates */
  MSG_OUTPUT_CREDIT = 0x09,
  MSG_RESIZE = 0x0a, /* a terminal command's window: u16 rows, u16 columns */
  /* Guest -> host */
  MSG_HELLO = 0x81,
  MSG_READY = 0x82,
  MSG_STDOUT = 0x83,
  MSG_STDERR = 0x84,
  MSG_EXIT = 0x85,
  MSG_ERROR = 0x86,
  MSG_HALTING = 0x88,
  MSG_STDIN_CREDIT = 0x89,
  /* Mediation tunnel, both directions */
  MSG_T_OPEN = 0x40,
  MSG_T_OPENED = 0x41,
  MSG_T_DATA = 0x42,
  MSG_T_EOF = 0x43,
  MSG_T_CLOSE = 0x44,
  MSG_T_CREDIT = 0x45,
};

/* TLV keys inside CONFIG */
enum { CFG_CA_PEM = 1, CFG_ENV = 2, CFG_HOSTNAME = 3, CFG_MEDIATION_PORT = 4, CFG_DNS_UPSTREAM = 5 };
/* TLV keys inside EXEC */
enum { EX_ARG = 1, EX_ENV = 2, EX_CWD = 3, EX_UID = 4, EX_GID = 5, EX_TIMEOUT_MS = 6, EX_STDIN = 7, EX_TTY = 8 };
/* TLV keys inside EXIT */
enum { EXIT_CODE = 1, EXIT_SIGNAL = 2, EXIT_TIMED_OUT = 3, EXIT_MESSAGE = 4 };
/* TLV keys inside HELLO */
enum { HELLO_VERSION = 1, HELLO_KERNEL = 2, HELLO_HAS_NET = 3 };

/* A growable byte buffer. */
struct buf {
  uint8_t *data;
  size_t len, cap;
};
void buf_append(struct buf *b, const void *p, size_t n);
void buf_consume(struct buf *b, size_t n);
void buf_free(struct buf *b);

/* TLV walking over a payload: returns 1 with key/value set, 0 at the end, -1 on a malformed record. */
struct tlv_iter {
  const uint8_t *p;
  size_t left;
};
int tlv_next(struct tlv_iter *it, uint8_t *key, const uint8_t **val, uint32_t *len);
void tlv_put(struct buf *b, uint8_t key, const void *val, uint32_t len);
void tlv_put_u32(struct buf *b, uint8_t key, uint32_t v);
uint32_t be32(const uint8_t *p);
void put_be32(uint8_t *p, uint32_t v);

/* The host channel (main.c owns it). */
void send_frame(uint8_t type, uint32_t stream, const void *payload, size_t len);
void send_error(uint32_t stream, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
size_t host_out_pending(void);
int64_t now_ms(void);
void logmsg(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* boot.c */
int boot_is_probe(void);
void boot_load_modules(void);
void boot_switch_root(void);
void boot_mount_runtime(void);
void boot_poweroff(void) __attribute__((noreturn));
int open_agent_port(void);

/* connect.c: the same binary run as CONNECT_HELPER, found in the guest at CONNECT_HELPER_PATH. */
#define CONNECT_HELPER "microagent-connect"
#define CONNECT_HELPER_PATH "/run/microagent/bin/" CONNECT_HELPER
int connect_main(int argc, char **argv);

/* net.c */
int net_setup(void); /* returns 1 when eth0 exists and was configured */
void net_lo_up(void);

/* config.c */
extern char **config_env;
extern size_t config_env_len;
void apply_config(uint32_t stream, const uint8_t *payload, size_t len);

/* exec.c */
struct pollfd;
void exec_start(uint32_t stream, const uint8_t *payload, size_t len);
void exec_stdin(uint32_t stream, const uint8_t *data, size_t len, int eof);
void exec_signal(uint32_t stream, int signo);
void exec_resize(uint32_t stream, const uint8_t *payload, size_t len);
void exec_output_credit(uint32_t stream, uint32_t bytes);
void exec_on_sigchld(void);
int exec_poll_fds(struct pollfd *fds, int max, int *tags);
void exec_handle(int tag, short revents);
int64_t exec_next_deadline(void);
void exec_check_deadlines(void);
void exec_kill_all(void);

/* tunnel.c */
void tunnel_listen(uint16_t port);
int tunnel_poll_fds(struct pollfd *fds, int max, int *tags);
void tunnel_handle(int tag, short revents);
void tunnel_from_host(uint8_t type, uint32_t stream, const uint8_t *payload, size_t len);

/* dnsrelay.c */
void dns_enable(const char *upstream_host_port);
int dns_poll_fds(struct pollfd *fds, int max, int *tags);
void dns_handle(int tag, short revents);
int64_t dns_next_deadline(void);
void dns_check_deadlines(void);

#define TAG(kind, idx) (((kind) << 24) | (idx))
#define TAG_KIND(t) ((t) >> 24)
#define TAG_IDX(t) ((t) & 0xffffff)

#endif
