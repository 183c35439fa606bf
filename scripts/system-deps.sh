#!/usr/bin/env bash
# Installs system packages. No argument: everything the test suite drives (openssl, curl, nginx, chromium, node,
# apache2 with mod_auth_openidc,
# PC/SC: pcscd + vsmartcard-vpcd + pcsc-tools, and what pyscard builds with). `build`: only what
# `pip install` needs to build pyscard (the Makefile runs it before installing). Other arguments: only those
# packages (`make run` asks for nginx alone).
# Runs apt-get only when something is missing, and only as root (CI and these machines run as root).
set -euo pipefail

build_missing() {
  # pyscard builds from source: swig, gcc, the PC/SC headers and the virtualenv interpreter's C headers.
  command -v swig >/dev/null 2>&1 || echo swig
  command -v gcc >/dev/null 2>&1 || echo gcc
  [ -f /usr/include/PCSC/winscard.h ] || echo libpcsclite-dev
  local py="${PYTHON:-python3.11}"  # the interpreter of the virtualenv (the Makefile passes PYTHON)
  if command -v "$py" >/dev/null 2>&1; then
    local include
    include="$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    [ -f "$include/Python.h" ] || echo python3-dev
  fi
}

missing=()
if [ "${1:-}" = "build" ]; then
  mapfile -t missing < <(build_missing)
else
  if [ $# -gt 0 ]; then
    wanted=("$@")
  else
    wanted=(openssl curl nginx chromium pcscd vsmartcard-vpcd pcsc-tools node apache2 libapache2-mod-auth-openidc)
    mapfile -t missing < <(build_missing)
  fi
  for pkg in "${wanted[@]}"; do
    case "$pkg" in
      # The browser tests (Playwright) drive Debian's Chromium at this exact path; never a downloaded browser.
      chromium) [ -x /usr/bin/chromium ] || missing+=(chromium) ;;
      # The card tests run pcscd with the vsmartcard-vpcd reader driver; scriptor (pcsc-tools) is a second client.
      pcscd) [ -x /usr/sbin/pcscd ] || missing+=(pcscd) ;;
      vsmartcard-vpcd) [ -f /usr/lib/pcsc/drivers/serial/libifdvpcd.so ] || missing+=(vsmartcard-vpcd) ;;
      pcsc-tools) command -v scriptor >/dev/null 2>&1 || missing+=(pcsc-tools) ;;
      # The business-login tests drive openid-client (npm, Node 20) as an independent relying party.
      # Apache's mod_auth_openidc is the second independent relying party of the business-login tests.
      apache2) [ -x /usr/sbin/apache2 ] || missing+=(apache2) ;;
      libapache2-mod-auth-openidc) [ -f /usr/lib/apache2/modules/mod_auth_openidc.so ] || missing+=(libapache2-mod-auth-openidc) ;;
      node) { command -v node && command -v npm; } >/dev/null 2>&1 || missing+=(nodejs npm) ;;
      *) command -v "$pkg" >/dev/null 2>&1 || [ -x "/usr/sbin/$pkg" ] || missing+=("$pkg") ;;
    esac
  done
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
