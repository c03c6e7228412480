/*
 * Guest network configuration by ioctl: loopback always, and eth0 (when the VM has a NIC) with the
 * fixed QEMU user-networking layout 10.0.2.15/24 via 10.0.2.2. It never configures anything the host
 * did not provide: no NIC means no network (isolated mode).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <net/route.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent.h"

static void set_addr(struct sockaddr *sa, const char *ip) {
  struct sockaddr_in *in = (struct sockaddr_in *)sa;
  memset(in, 0, sizeof *in);
  in->sin_family = AF_INET;
  inet_pton(AF_INET, ip, &in->sin_addr);
}

static int if_up(int s, const char *name) {
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
  if (ioctl(s, SIOCGIFFLAGS, &ifr) != 0) return -1;
  ifr.ifr_flags |= IFF_UP | IFF_RUNNING;
  return ioctl(s, SIOCSIFFLAGS, &ifr);
}

void net_lo_up(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return;
  if (if_up(s, "lo") != 0) logmsg("lo up: %s", strerror(errno));
  close(s);
}

int net_setup(void) {
  int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (s < 0) return 0;
  /* Asked by ioctl, the kernel would try to load a driver for a missing eth0 (request_module runs
     the image's modprobe): 50-70 ms of a TCG boot for every isolated workspace. sysfs just answers. */
  if (access("/sys/class/net/eth0", F_OK) != 0) {
    close(s);
    return 0;
  }
  struct ifreq ifr;
  memset(&ifr, 0, sizeof ifr);
  strncpy(ifr.ifr_name, "eth0", IFNAMSIZ - 1);
  set_addr(&ifr.ifr_addr, "10.0.2.15");
  if (ioctl(s, SIOCSIFADDR, &ifr) != 0) logmsg("eth0 address: %s", strerror(errno));
  set_addr(&ifr.ifr_netmask, "255.255.255.0");
  if (ioctl(s, SIOCSIFNETMASK, &ifr) != 0) logmsg("eth0 netmask: %s", strerror(errno));
  if (if_up(s, "eth0") != 0) logmsg("eth0 up: %s", strerror(errno));
  struct rtentry rt;
  memset(&rt, 0, sizeof rt);
  set_addr(&rt.rt_dst, "0.0.0.0");
  set_addr(&rt.rt_genmask, "0.0.0.0");
  set_addr(&rt.rt_gateway, "10.0.2.2");
  rt.rt_flags = RTF_UP | RTF_GATEWAY;
  rt.rt_dev = "eth0";
  if (ioctl(s, SIOCADDRT, &rt) != 0 && errno != EEXIST) logmsg("default route: %s", strerror(errno));
  close(s);
  return 1;
}
