/*
 * CONFIG: the workspace settings the host pushes into the guest: CA trust (own file + appended once
 * to the system bundle), the environment of every command, hostname and /etc/hosts, the DNS relay
 * upstream and resolv.conf, and the mediation listeners. Applying the same CONFIG twice changes
 * nothing; an unreadable record stops processing with an ERROR, never a crash.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"

char **config_env;
size_t config_env_len;

static int write_file(const char *path, const void *data, size_t len, int append) {
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (append ? O_APPEND : O_TRUNC), 0644);
  if (fd < 0) return -1;
  ssize_t n = write(fd, data, len);
  close(fd);
  return n == (ssize_t)len ? 0 : -1;
}

/* Whether `path` holds exactly `len` bytes equal to `data`. */
static int file_equals(const char *path, const uint8_t *data, uint32_t len) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  uint8_t *have = malloc(len + 1);
  ssize_t n = have ? read(fd, have, len + 1) : -1;
  close(fd);
  int same = n == (ssize_t)len && memcmp(have, data, len) == 0;
  free(have);
  return same;
}

/* Appends the CA to the system bundle once, so CONFIG can be sent again. microagent-ca.pem is
   written after the append, so finding this CA in it means the bundle has it: comparing that small
   file spares reading the whole bundle (hundreds of KB from a cold disk, ~40 ms of a TCG boot). */
static void install_ca(const uint8_t *pem, uint32_t len) {
  const char *own = "/etc/ssl/certs/microagent-ca.pem", *bundle = "/etc/ssl/certs/ca-certificates.crt";
  if (file_equals(own, pem, len)) return;
  mkdir("/etc/ssl", 0755);
  mkdir("/etc/ssl/certs", 0755);
  if (write_file(bundle, "\n", 1, 1) != 0 || write_file(bundle, pem, len, 1) != 0)
    logmsg("append to %s: %s", bundle, strerror(errno));
  if (write_file(own, pem, len, 0) != 0) logmsg("write microagent-ca.pem: %s", strerror(errno));
}

/* localhost and the hostname must resolve locally: otherwise every lookup of them would go to the
   workspace resolver (and be audited as an unknown name). Existing entries are kept. */
static void ensure_hosts(const char *hostname) {
  FILE *f = fopen("/etc/hosts", "re");
  int has_localhost = 0, has_name = 0;
  if (f) {
    char line[512];
    while (fgets(line, sizeof line, f)) {
      if (line[0] == '#') continue;
      for (char *tok = strtok(line, " \t\r\n"); tok; tok = strtok(NULL, " \t\r\n")) {
        if (strcmp(tok, "localhost") == 0) has_localhost = 1;
        if (strcmp(tok, hostname) == 0) has_name = 1;
      }
    }
    fclose(f);
  }
  char add[400];
  int n = snprintf(add, sizeof add, "%s%s%s%s", has_localhost ? "" : "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
                   has_name ? "" : "127.0.1.1\t", has_name ? "" : hostname, has_name ? "" : "\n");
  if (n > 0 && (size_t)n < sizeof add) write_file("/etc/hosts", add, (size_t)n, 1);
}

/* Where the image has OpenSSH's client (its ssh_config includes ssh_config.d first), ssh goes through
   the proxy by default: the guest has no other way out, and a policy's tcp rule (SSH to a forge) would
   otherwise allow what no ssh could reach. The user's ~/.ssh/config is read first and wins; loopback
   (mediation channels, a guest's own sshd) is left direct. Only with a proxy: isolated guests have none. */
static void route_ssh_through_proxy(void) {
  static const char conf[] =
      "# Written by microagent at each start: the workspace reaches nothing but through its egress proxy.\n"
      "# A ProxyCommand in ~/.ssh/config comes first.\n"
      "Host * !localhost !127.0.0.1 !::1\n"
      "  ProxyCommand " CONNECT_HELPER_PATH " %h %p\n";
  const char *path = "/etc/ssh/ssh_config.d/microagent.conf";
  struct stat st;
  if (stat("/etc/ssh/ssh_config.d", &st) != 0 || !S_ISDIR(st.st_mode)) return;
  if (file_equals(path, (const uint8_t *)conf, sizeof conf - 1)) return;
  /* Replaced, never written through: a symlink planted there must not point root's write elsewhere. */
  unlink(path);
  if (write_file(path, conf, sizeof conf - 1, 0) != 0) logmsg("write %s: %s", path, strerror(errno));
}

static int env_has(const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; i < config_env_len; i++)
    if (strncmp(config_env[i], name, n) == 0 && config_env[i][n] == '=') return 1;
  return 0;
}

void apply_config(uint32_t stream, const uint8_t *p, size_t len) {
  struct tlv_iter it = {p, len};
  uint8_t key;
  const uint8_t *v;
  uint32_t vl;
  int r, env_reset = 0;
  while ((r = tlv_next(&it, &key, &v, &vl)) == 1) {
    char text[256];
    size_t tl = vl < sizeof text - 1 ? vl : sizeof text - 1;
    memcpy(text, v, tl);
    text[tl] = 0;
    switch (key) {
      case CFG_CA_PEM: install_ca(v, vl); break;
      case CFG_ENV: {
        if (!env_reset) {
          for (size_t i = 0; i < config_env_len; i++) free(config_env[i]);
          config_env_len = 0;
          env_reset = 1;
        }
        if (!memchr(v, '=', vl)) break;
        char **grown = realloc(config_env, (config_env_len + 2) * sizeof *config_env);
        if (!grown) abort();
        config_env = grown;
        config_env[config_env_len] = strndup((const char *)v, vl);
        config_env[++config_env_len] = NULL;
        break;
      }
      case CFG_HOSTNAME:
        if (sethostname(text, tl) != 0) logmsg("sethostname: %s", strerror(errno));
        mkdir("/etc", 0755);
        ensure_hosts(text);
        text[tl] = '\n';
        write_file("/etc/hostname", text, tl + 1, 0);
        break;
      case CFG_MEDIATION_PORT:
        if (vl == 4 && be32(v) > 0 && be32(v) < 65536) tunnel_listen((uint16_t)be32(v));
        break;
      case CFG_DNS_UPSTREAM:
        dns_enable(text);
        mkdir("/etc", 0755);
        unlink("/etc/resolv.conf"); /* images often ship it as a symlink into /run */
        write_file("/etc/resolv.conf", "nameserver 127.0.0.53\noptions edns0\n", 35, 0);
        break;
      default: break;
    }
  }
  if (r < 0) return send_error(stream, "malformed CONFIG payload");
  if (env_has("HTTPS_PROXY")) route_ssh_through_proxy();
  send_frame(MSG_READY, stream, NULL, 0);
}

