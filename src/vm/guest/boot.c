/*
 * Boot steps of the guest agent as PID 1: load the initramfs modules, mount the ext4 root disk and
 * switch into it (move mount + chroot, staying PID 1), mount the runtime filesystems, find the
 * virtio-serial agent port, and power off. Failures are logged to the console and, where the guest
 * cannot work without the step, end in a power-off rather than a kernel panic loop.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent.h"

static char cmdline[4096];

static const char *read_cmdline(void) {
  if (cmdline[0]) return cmdline;
  int fd = open("/proc/cmdline", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  ssize_t n = read(fd, cmdline, sizeof cmdline - 1);
  close(fd);
  cmdline[n > 0 ? n : 0] = 0;
  return cmdline;
}

/* Value of `key=` on the kernel command line, copied into out; 0 when absent. */
static int cmdline_value(const char *key, char *out, size_t outlen) {
  const char *c = read_cmdline();
  size_t kl = strlen(key);
  for (const char *p = c; *p;) {
    while (*p == ' ' || *p == '\n') p++;
    const char *end = p;
    while (*end && *end != ' ' && *end != '\n') end++;
    if ((size_t)(end - p) > kl && strncmp(p, key, kl) == 0 && p[kl] == '=') {
      size_t vl = (size_t)(end - p) - kl - 1;
      if (vl >= outlen) vl = outlen - 1;
      memcpy(out, p + kl + 1, vl);
      out[vl] = 0;
      return 1;
    }
    if ((size_t)(end - p) == kl && strncmp(p, key, kl) == 0) {
      out[0] = 0;
      return 1;
    }
    p = end;
  }
  return 0;
}

int boot_is_probe(void) {
  char v[8];
  mkdir("/proc", 0755);
  mount("proc", "/proc", "proc", 0, NULL);
  return cmdline_value("microagent.probe", v, sizeof v);
}

/* /etc/modules.list holds module file names in dependency order (written by the host). */
void boot_load_modules(void) {
  FILE *f = fopen("/etc/modules.list", "re");
  if (!f) return;
  char line[256];
  while (fgets(line, sizeof line, f)) {
    line[strcspn(line, "\r\n")] = 0;
    if (!line[0]) continue;
    char path[300];
    snprintf(path, sizeof path, "/lib/modules/%s", line);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      logmsg("module %s: %s", line, strerror(errno));
      continue;
    }
    if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
      logmsg("module %s: %s", line, strerror(errno));
    close(fd);
  }
  fclose(f);
}

static int wait_for_path(const char *path, int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 10) {
    if (access(path, F_OK) == 0) return 0;
    usleep(10000);
  }
  return -1;
}

void boot_switch_root(void) {
  char root[128] = "/dev/vda";
  cmdline_value("microagent.root", root, sizeof root);
  mkdir("/dev", 0755);
  if (mount("devtmpfs", "/dev", "devtmpfs", 0, "mode=0755") != 0 && errno != EBUSY)
    logmsg("mount devtmpfs: %s", strerror(errno));
  if (wait_for_path(root, 10000) != 0) {
    logmsg("root device %s did not appear; powering off", root);
    boot_poweroff();
  }
  mkdir("/newroot", 0755);
  if (mount(root, "/newroot", "ext4", MS_NOATIME, NULL) != 0) {
    logmsg("mount %s on /newroot: %s; powering off", root, strerror(errno));
    boot_poweroff();
  }
  umount2("/dev", MNT_DETACH);
  umount2("/proc", MNT_DETACH);
  if (chdir("/newroot") != 0 || mount(".", "/", NULL, MS_MOVE, NULL) != 0 || chroot(".") != 0 ||
      chdir("/") != 0) {
    logmsg("switch root: %s; powering off", strerror(errno));
    boot_poweroff();
  }
}

static void mount_fs(const char *src, const char *dst, const char *type, unsigned long flags,
                     const char *opts) {
  mkdir(dst, 0755);
  if (mount(src, dst, type, flags, opts) != 0 && errno != EBUSY)
    logmsg("mount %s on %s: %s", type, dst, strerror(errno));
}

/* Under TCG every cold disk read is an emulated virtio round trip. A 2 MiB readahead window (the
   kernel's default is 128 KiB) brings a command's binary in with a few requests instead of many: the
   first command after boot prints ~15 ms sooner. The disk is a file in the host's page cache, so
   reading ahead more than a command needs costs little. */
static void widen_root_readahead(void) {
  int fd = open("/sys/block/vda/queue/read_ahead_kb", O_WRONLY | O_CLOEXEC);
  if (fd < 0 || write(fd, "2048", 4) != 4) logmsg("read_ahead_kb: %s", strerror(errno));
  if (fd >= 0) close(fd);
}

/* The agent's own binary (still the initramfs's /init, below the switched root) bind-mounted read-only
   as microagent-connect: every image gets the helper, with no copy and no write to its disk. */
static void expose_connect_helper(void) {
  mkdir("/run/microagent/bin", 0755);
  int fd = open(CONNECT_HELPER_PATH, O_WRONLY | O_CREAT | O_CLOEXEC, 0755);
  if (fd >= 0) close(fd);
  if (mount("/proc/self/exe", CONNECT_HELPER_PATH, NULL, MS_BIND, NULL) != 0 ||
      mount(NULL, CONNECT_HELPER_PATH, NULL, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) != 0)
    logmsg("%s: %s", CONNECT_HELPER_PATH, strerror(errno));
}

void boot_mount_runtime(void) {
  mount_fs("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  mount_fs("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL);
  widen_root_readahead();
  mount_fs("devtmpfs", "/dev", "devtmpfs", MS_NOSUID, "mode=0755");
  mount_fs("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC, "gid=5,mode=620,ptmxmode=666");
  mount_fs("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mount_fs("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777");
  mount_fs("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755");
  /* No udev in the guest: the conventional /dev links shells and runtimes expect. */
  symlink("/proc/self/fd", "/dev/fd");
  symlink("/proc/self/fd/0", "/dev/stdin");
  symlink("/proc/self/fd/1", "/dev/stdout");
  symlink("/proc/self/fd/2", "/dev/stderr");
  mkdir("/run/microagent", 0755);
  expose_connect_helper();
}

/* The port named microagent.agent, found through sysfs (no udev); devtmpfs has made its node. */
int open_agent_port(void) {
  for (int attempt = 0; attempt < 500; attempt++) {
    DIR *d = opendir("/sys/class/virtio-ports");
    if (d) {
      struct dirent *e;
      while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[300], name[64] = {0};
        snprintf(path, sizeof path, "/sys/class/virtio-ports/%s/name", e->d_name);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) continue;
        ssize_t n = read(fd, name, sizeof name - 1);
        close(fd);
        if (n <= 0 || strncmp(name, "microagent.agent", 16) != 0) continue;
        snprintf(path, sizeof path, "/dev/%s", e->d_name);
        int port = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
        if (port >= 0) {
          closedir(d);
          return port;
        }
      }
      closedir(d);
    }
    usleep(10000);
  }
  return -1;
}

void boot_poweroff(void) {
  exec_kill_all();
  kill(-1, SIGTERM);
  usleep(200000);
  kill(-1, SIGKILL);
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
  sync();
  static const char *const mounts[] = {"/run", "/tmp", "/dev/shm", "/dev/pts", "/dev", "/sys", "/proc"};
  for (size_t i = 0; i < sizeof mounts / sizeof *mounts; i++) umount2(mounts[i], MNT_DETACH);
  mount(NULL, "/", NULL, MS_REMOUNT | MS_RDONLY, NULL);
  sync();
  /* A reset, not an ACPI power-off: microvm's power-off path is not reliable, while a reset
     (reboot=t: triple fault) always ends QEMU, which runs with -no-reboot. */
  reboot(RB_AUTOBOOT);
  reboot(RB_POWER_OFF);
  for (;;) pause();
}
