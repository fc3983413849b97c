#!/bin/bash
# Builds the Debian arm64 root that `make deploy-check` boots the host's user data in, as a
# tar file: build_root.sh OUT.tar (about 10 minutes under emulation, ~760 MB; run as root).
# The content key of the cache (infra/deploy_check/root.py) is this file's hash: change
# anything here and the next check builds a new root.
set -euo pipefail
out=$1
suite=bookworm
mirror=http://deb.debian.org/debian
# What the host installs with dnf (python3.11, -pip, -devel, gcc, openssl-devel), by its
# Debian names; curl is in every AL2023 image (curl-minimal), and the boot script uses it.
# python3-distutils provides the python3.11-distutils that python3.11-venv depends on, which
# debootstrap's resolver (no virtual packages) cannot find by itself.
include=python3.11,python3.11-venv,python3-distutils,python3-lib2to3,python3.11-dev,gcc,libc6-dev,libssl-dev,curl,ca-certificates
# AL2023's python3.11-pip is 22.3.1, and its venvs get that pip: so do the root's.
pip_wheel=pip-22.3.1-py3-none-any.whl
pip_sha256=908c78e6bc29b676ede1c4d57981d490cb892eb45cd8c214ab6298125119e077

work=$(mktemp -d "${out}.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
if ! debootstrap --arch=arm64 --include="$include" "$suite" "$work/root" "$mirror"; then
  tail -n 30 "$work/root/debootstrap/debootstrap.log" >&2 || true
  exit 1
fi

env -u PIP_FIND_LINKS PIP_CONFIG_FILE=/dev/null python3 -m pip download --quiet --no-deps \
  --only-binary=:all: --index-url https://pypi.org/simple --dest "$work" "pip==22.3.1"
echo "$pip_sha256  $work/$pip_wheel" | sha256sum --check --quiet
rm -f "$work"/root/usr/share/python-wheels/pip-*.whl
cp "$work/$pip_wheel" "$work/root/usr/share/python-wheels/"
# The root's venvs must get that pip: fail the build here rather than the check later.
chroot "$work/root" /usr/bin/python3.11 -m venv /tmp/pip-probe
chroot "$work/root" /tmp/pip-probe/bin/pip --version | grep -q '^pip 22\.3\.1 '
rm -rf "$work/root/tmp/pip-probe" "$work"/root/var/cache/apt/archives/*.deb

tar -C "$work/root" --numeric-owner -cf "$work/root.tar" .
mv "$work/root.tar" "$out"
