#!/usr/bin/env bash
# The Debian tools the tests drive, installed when missing (`npm test` and `npm run
# test:faults` run this first; so does CI through them). As root with apt-get it installs
# what is missing; otherwise it names the packages and stops, so that a missing tool is one
# clear line instead of a page of failed tests. RMR_SKIP_TEST_DEPS=1 skips the check.
#
#   openssl            test certificates (TLS)
#   gcc, libc6-dev     the jhash cross-check compiles a C reference
#   nbdkit             the reference NBD server (control in the NBD tests and benchmark)
#   libnbd-bin         nbdinfo, nbdcopy, nbdfuse (Debian 12 ships nbdfuse here)
#   python3-libnbd     nbdsh
#   qemu-utils         qemu-io, qemu-img
#   fio                fio's nbd engine with crc32c verify
#   iproute2, nftables network namespaces, veth, tc tbf, partitions (fault suite, as root)
#   fuse3, e2fsprogs   ext4 on the export through nbdfuse and a loop device
#   chromium           the dashboard's browser test (headless, driven by playwright-core)
#   prometheus         promtool check rules, and a real Prometheus scraping the daemons
set -euo pipefail
[ "${RMR_SKIP_TEST_DEPS:-}" = 1 ] && exit 0

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have openssl || need+=(openssl)
{ have gcc && [ -f /usr/include/stdio.h ]; } || need+=(gcc libc6-dev)
have nbdkit || need+=(nbdkit)
{ have nbdinfo && have nbdcopy && have nbdfuse; } || need+=(libnbd-bin)
[ -x /usr/bin/nbdsh ] || need+=(python3-libnbd)
{ have qemu-io && have qemu-img; } || need+=(qemu-utils)
have fio || need+=(fio)
{ [ -x /usr/sbin/ip ] || [ -x /sbin/ip ]; } && { [ -x /usr/sbin/tc ] || [ -x /sbin/tc ]; } || need+=(iproute2)
{ [ -x /usr/sbin/nft ] || [ -x /sbin/nft ]; } || need+=(nftables)
have fusermount3 || need+=(fuse3)
{ have mkfs.ext4 || [ -x /usr/sbin/mkfs.ext4 ] || [ -x /sbin/mkfs.ext4 ]; } || need+=(e2fsprogs)
[ -x /usr/bin/chromium ] || need+=(chromium)
{ have prometheus && have promtool; } || need+=(prometheus)

[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && have apt-get; then
  echo "test-deps: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  exit 0
fi
echo "test-deps: the tests need these Debian packages: ${need[*]}" >&2
echo "  install them with: sudo apt-get install -y --no-install-recommends ${need[*]}" >&2
echo "  (or set RMR_SKIP_TEST_DEPS=1 to run the tests without them: those that use them fail)" >&2
exit 1
