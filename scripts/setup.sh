#!/usr/bin/env bash
# Prepares a fresh Debian machine for passthru: system packages, then a venv in .venv.
# Idempotent: re-running it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=(
  libvirt-dev        # libvirt-python compiles against it
  libvirt0           # the test:/// driver, and libvirt's schemas for checking domain XML
  libvirt-clients    # virsh, for operators looking at what passthru made
  libvirt-daemon-system  # libvirtd with the qemu driver, and the libvirt-qemu user it
                         # needs: real guests in the demo and tests (none started here)
  qemu-system-x86    # the hypervisor (TCG where KVM does not run guests)
  qemu-utils         # qemu-img: image checks, per-VM copy-on-write disks
  busybox-static     # the init of the small guest the demo and tests boot
  kmod               # depmod: the guest kernel's module dependencies
  cpio               # tests read back the guest's initrd
  openssh-client     # ssh-keygen: the keypair tests' real keys
  pci.ids            # vendor and device names
  postgresql         # the store tests start a throwaway cluster
  iproute2           # network namespaces for multi-host tests
  git                # the benchmarks' baselines: earlier revisions of this repository
  chromium           # the fleet page's browser test (headless)
  fonts-dejavu-core  # readable text in the page's screenshot
  pkg-config
  gcc
  python3-dev        # headers for libvirt-python's build when Debian's python3 is used
  python3-venv
)
missing=()
for p in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
stamp=.venv/.passthru-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing passthru and its test tools into .venv"
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test,nova]'
  echo "$want" > "$stamp"
fi
