#!/usr/bin/env bash
# Installs the system packages the test suite drives (openssl, curl, nginx, chromium).
# Runs apt-get only when something is missing, and only as root (CI and these machines run as root).
set -euo pipefail
packages=(openssl curl nginx)
commands=(openssl curl nginx)
missing=()
for i in "${!commands[@]}"; do
  command -v "${commands[$i]}" >/dev/null 2>&1 || [ -x "/usr/sbin/${commands[$i]}" ] || missing+=("${packages[$i]}")
done
# The browser tests (Playwright) drive Debian's Chromium at this exact path; never a downloaded browser.
[ -x /usr/bin/chromium ] || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "missing system packages: ${missing[*]} (install them: apt-get install -y ${missing[*]})" >&2
  exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
