#!/usr/bin/env bash
# Installs the system packages the test suite drives (openssl, curl, nginx, chromium, pcscd + vpcd).
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
# PC/SC for apdl: pyscard builds from source (swig, libpcsclite-dev, gcc); the card tests run pcscd with the
# vsmartcard-vpcd reader driver and scriptor (pcsc-tools). `system-deps.sh build` checks only what
# `pip install -r requirements.txt` needs to build (the Makefile runs it before installing).
build_missing=()
command -v swig >/dev/null 2>&1 || build_missing+=(swig)
command -v gcc >/dev/null 2>&1 || build_missing+=(gcc)
[ -f /usr/include/PCSC/winscard.h ] || build_missing+=(libpcsclite-dev)
py="${PYTHON:-python3.11}"  # the interpreter of the virtualenv (Makefile passes PYTHON): its C headers
if command -v "$py" >/dev/null 2>&1; then
  include="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  [ -f "$include/Python.h" ] || build_missing+=(python3-dev)
fi
if [ "${1:-}" = "build" ]; then
  missing=(${build_missing[@]+"${build_missing[@]}"})
else
  missing+=(${build_missing[@]+"${build_missing[@]}"})
  [ -x /usr/sbin/pcscd ] || missing+=(pcscd)
  [ -f /usr/lib/pcsc/drivers/serial/libifdvpcd.so ] || missing+=(vsmartcard-vpcd)
  command -v scriptor >/dev/null 2>&1 || missing+=(pcsc-tools)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != "0" ]; then
  echo "missing system packages: ${missing[*]} (install them: apt-get install -y ${missing[*]})" >&2
  exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
