#!/usr/bin/env bash
# Makes sure Debian's Chromium (/usr/bin/chromium) exists for the browser tests (tests/browser).
# Playwright drives it with executable_path=/usr/bin/chromium: its own browser download
# (`playwright install`) is never used. Quiet when Chromium is already there; installs it with
# apt-get when we may (root + apt-get), running `apt-get update` only if the first try fails;
# otherwise says so, and the browser tests are skipped with that reason.
set -u
CHROMIUM=${TASKGRID_CHROMIUM:-/usr/bin/chromium}
if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Chromium for the browser tests (apt-get install chromium)"
  install_chromium() {
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  }
  install_chromium || { apt-get update -qq && install_chromium; } \
    || echo "could not install Chromium: the browser tests will be skipped"
else
  echo "Chromium ($CHROMIUM) not found and cannot be installed here: the browser tests will be skipped"
fi
exit 0
