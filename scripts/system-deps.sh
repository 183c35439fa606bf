#!/usr/bin/env bash
# Installs system packages: with no argument, everything the test suite drives (openssl, curl, nginx,
# chromium); with arguments, only those (`make run` asks for nginx alone).
# Runs apt-get only when something is missing, and only as root (CI and these machines run as root).
set -euo pipefail
if [ $# -gt 0 ]; then
  wanted=("$@")
else
  wanted=(openssl curl nginx chromium)
fi
missing=()
for pkg in "${wanted[@]}"; do
  case "$pkg" in
    # The browser tests (Playwright) drive Debian's Chromium at this exact path; never a downloaded browser.
    chromium) [ -x /usr/bin/chromium ] || missing+=(chromium) ;;
    *) command -v "$pkg" >/dev/null 2>&1 || [ -x "/usr/sbin/$pkg" ] || missing+=("$pkg") ;;
  esac
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "missing system packages: ${missing[*]} (install them: apt-get install -y ${missing[*]})" >&2
  exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
