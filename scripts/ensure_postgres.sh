#!/usr/bin/env bash
# Makes sure PostgreSQL server binaries (initdb, pg_ctl) exist for the test suite.
# Installs Debian's postgresql package when they are missing and we may (root + apt-get);
# otherwise says so, and the PostgreSQL tests are skipped with that reason.
set -u
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing PostgreSQL server binaries (apt-get install postgresql)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null \
    || echo "could not install PostgreSQL: its tests will be skipped"
else
  echo "PostgreSQL server binaries not found and cannot be installed here: its tests will be skipped"
fi
exit 0
