#!/usr/bin/env bash
# Installs everything microagent needs on a fresh Debian/Ubuntu machine, as root (or with sudo):
# Debian packages (only the missing ones), the npm dependencies, and the build. Safe to re-run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# What each package is for:
#   qemu-system-x86 ........ the microVM backend (QEMU microvm machine)
#   e2fsprogs .............. mke2fs -d builds ext4 root filesystems from OCI layers
#   gcc libc6-dev .......... builds the static guest agent (src/vm/guest)
#   cpio kmod zstd ......... the guest initramfs and its kernel modules
#   lz4 .................... unpacks the kernel (Debian's bzImage payload) once, for direct PVH boot
#   linux-source flex bison bc libelf-dev
#                            builds the microVM guest kernel from Debian's own kernel sources
#   busybox-static ......... the default offline OCI image
#   curl ca-certificates ... TLS client in tests and the default image
#   dnsutils ............... dig, for DNS resolver tests
#   docker-registry ........ a real OCI registry on loopback for pull tests
#   dnsmasq-base dnsperf ... the DNS benchmark peer and load generator
#   socat .................. QEMU guestfwd: one process per guest connection to a workspace socket
#   openssl xz-utils ....... test certificates and CA checks; compressed kernel modules
#   git .................... an agent's clone and push through the proxy in tests (git-http-backend)
PKGS=(qemu-system-x86 e2fsprogs gcc libc6-dev make cpio kmod zstd lz4 xz-utils linux-source flex bison bc libelf-dev
      busybox-static curl ca-certificates openssl dnsutils docker-registry dnsmasq-base dnsperf socat git)

# 20.12: crypto.hash, the one-shot SHA-256 the audit log chains its records with.
node_ok=$(node -p 'const [a, b] = process.versions.node.split(".").map(Number); a > 20 || (a === 20 && b >= 12) ? 1 : 0' 2>/dev/null || echo 0)
if [ "$node_ok" != 1 ]; then
  echo "[setup] microagent needs Node.js >= 20.12 with npm (found: $(node --version 2>/dev/null || echo none))." >&2
  echo "[setup] fix: install Node.js 20.12 or later from your usual source, then re-run this script." >&2
  exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "[setup] installing Debian packages: ${missing[*]}" >&2
  $SUDO apt-get update -q
  # Package maintainer scripts must not start system-wide daemons (docker-registry, dnsmasq):
  # microagent and its tests start their own, on their own loopback ports.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    own_policy=1
  fi
  rc=0
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" || rc=$?
  if ((own_policy)); then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  ((rc == 0)) || { echo "[setup] apt-get install failed ($rc)" >&2; exit "$rc"; }
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "[setup] npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build

# `microagent` on PATH: a link to this checkout's build.
if [ "$(readlink -f "$(command -v microagent 2>/dev/null || echo none)")" != "$(readlink -f dist/cli/main.js)" ]; then
  $SUDO npm link --no-audit --no-fund --loglevel=error >/dev/null
fi

# The guest kernel and the default OCI image (busybox + curl from Debian packages), into the default
# state directory, so the first `microagent run` works offline. The kernel is built from Debian's
# linux-source with microagent's microVM config (a few minutes, once; it boots about twice as fast as
# a distribution kernel). Should the build fail with no kernel installed, Debian's
# linux-image-cloud-amd64 is installed instead; an installed one is kept.
# Both come through apt: no download of our own. A kernel the user gave with --from is left alone; one
# built from an older src/vm/guest-kernel/microvm.config is built again.
if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then $SUDO apt-get update -q; fi
kernel=$(node dist/cli/main.js --json kernel show 2>/dev/null || true)
if [ -z "$kernel" ] || node --input-type=module -e '
  const { isCurrentBuild } = await import("./dist/vm/kernel-build.js");
  const { source } = JSON.parse(process.argv[1]);
  process.exit(source.startsWith("debian:") || (source.startsWith("build:") && !isCurrentBuild(source)) ? 0 : 1);' "$kernel"; then
  echo "[setup] building the microVM guest kernel (microagent kernel build)" >&2
  if ! node dist/cli/main.js kernel build; then
    if [ -z "$kernel" ]; then
      echo "[setup] warning: the kernel build failed (see above); installing Debian's cloud kernel instead" >&2
      node dist/cli/main.js kernel install
    else
      echo "[setup] warning: the kernel build failed (see above); keeping the kernel already installed" >&2
    fi
  fi
fi
./scripts/build-default-image.sh
echo "[setup] ok: try \"microagent run -- uname -a\"" >&2
