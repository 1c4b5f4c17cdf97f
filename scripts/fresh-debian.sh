#!/usr/bin/env bash
# Runs a command (default: make test) on a really fresh Debian: a debootstrap minbase
# chroot with /proc, /sys and /dev bound in, this machine's CA bundle and pip settings
# copied in, and a fresh clone of this repository's HEAD inside it. It shows what
# scripts/setup.sh forgets to install, which a machine that already has it cannot.
#
#   sudo scripts/fresh-debian.sh [CHROOT_DIR] [COMMAND...]
#
# CHROOT_DIR defaults to /var/tmp/passthru-fresh; an existing one is reused as it is, so
# delete it for a new start. Needs root, debootstrap and git.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${1:-/var/tmp/passthru-fresh}
shift || true
command=("$@")
[ ${#command[@]} -gt 0 ] || command=(make test)

if [ ! -x "$root/usr/bin/apt-get" ]; then
  mkdir -p "$root"
  debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian
fi
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
cp /etc/resolv.conf "$root/etc/resolv.conf"

mounts=()
cleanup() {
  for ((i=${#mounts[@]}-1; i>=0; i--)); do umount -l "${mounts[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
# The chroot's / must be a mount point, as a machine's is: `ip netns exec` and `ip -n`
# remount it as a slave.
mountpoint -q "$root" || { mount --bind "$root" "$root"; mounts+=("$root"); }
for fs in proc sys dev; do
  mountpoint -q "$root/$fs" || { mount --rbind "/$fs" "$root/$fs"; mounts+=("$root/$fs"); }
done

rm -rf "$root/work/passthru"
mkdir -p "$root/work"
git clone -q "$repo" "$root/work/passthru"
# A minbase system has no make, git or python3 yet: the first packages a new machine needs
# to run the README's commands at all.
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
  bash -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    --no-install-recommends make python3 ca-certificates >/dev/null'
# After ca-certificates, which writes its own bundle: pip trusts what this machine trusts.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  bash -c "cd /work/passthru && ${command[*]}"
