#!/usr/bin/env bash
# Installs the headless browser the dashboard's end-to-end tests drive: Debian's `chromium`
# package at /usr/bin/chromium. playwright-core never downloads a browser of its own (this machine
# reaches only the npm registry and Debian's packages), so the distribution's build is the one used.
# Idempotent: prints nothing and exits 0 when the browser is already there.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0

# Root installs directly; anyone else needs passwordless sudo (never prompt: CI has no stdin).
if [ "$(id -u)" -eq 0 ]; then
  as_root() { "$@"; }
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root() { sudo -n env DEBIAN_FRONTEND=noninteractive "$@"; }
else
  echo "[browser] $CHROMIUM is missing and installing it needs root or passwordless sudo: apt-get install chromium" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "[browser] installing Debian's chromium (once)" >&2
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# apt's lock may be held by a concurrent install (e.g. the stack script): wait for it, not fail.
# Its chatter goes to a log that is shown only if something fails.
if ! { as_root apt-get -o DPkg::Lock::Timeout=300 update -qq \
       && as_root apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "[browser] installing chromium failed" >&2
  exit 1
fi
[ -x "$CHROMIUM" ] || { echo "[browser] chromium installed but $CHROMIUM is not there" >&2; exit 1; }
echo "[browser] $("$CHROMIUM" --version 2>/dev/null || echo chromium) ready" >&2
