#!/bin/sh
# Install the system packages the offline tests need, only when missing (Debian/Ubuntu, root).
# `sh tests/system-deps.sh bench` also installs nginx for the benchmark's static target.
set -eu
missing=""
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v unshare >/dev/null 2>&1 || missing="$missing util-linux"
command -v nsenter >/dev/null 2>&1 || missing="$missing util-linux"
command -v ssh-keygen >/dev/null 2>&1 || missing="$missing openssh-client"
command -v ps >/dev/null 2>&1 || missing="$missing procps"
command -v curl >/dev/null 2>&1 || missing="$missing curl"
# emulated hosts log in as ubuntu / ec2-user with passwordless sudo, as on EC2
command -v sudo >/dev/null 2>&1 || missing="$missing sudo"
# tests/test_html_report.py opens the --html pages in headless Chromium
command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
command -v iptables-restore >/dev/null 2>&1 || [ -x /usr/sbin/iptables-restore ] || missing="$missing iptables"
if [ "${1:-}" = bench ]; then
  [ -x /usr/sbin/nginx ] || missing="$missing nginx-light"
fi
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "tests need:$missing (install them, or the emulated-host tests will skip)" >&2
  exit 0
fi
echo "installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing >/dev/null
