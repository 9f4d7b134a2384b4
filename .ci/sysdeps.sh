#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks use, when missing and when we are root.
# Anything skipped is said plainly, with the command that would install it.
set -uo pipefail
# bubblewrap: the local backend's sandbox; wrk: bench/serve_throughput's load generator;
# chromium: the browser tests (tests/browser) drive /usr/bin/chromium with Playwright;
# postgresql: the suite's PostgreSQL pass starts its own server (tests/postgres.py);
# docker-compose: checks compose.yaml (`config` needs no container engine).
# passt (pasta): local jobs' outbound network; util-linux (setpriv, unshare, nsenter), iproute2
# and e2fsprogs (mkfs.ext4): the sandbox and each job's volume.
# `sysdeps.sh runtime` (make run) installs only what running jobs needs.
runtime=(bubblewrap passt util-linux iproute2 e2fsprogs)
if [ "${1:-}" = "runtime" ]; then
  wanted=("${runtime[@]}")
else
  wanted=("${runtime[@]}" wrk chromium postgresql docker-compose)
fi
missing=()
for pkg in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  echo "sysdeps: installing ${missing[*]} with apt-get"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } >/tmp/anyjob-apt.log 2>&1; then
    echo "sysdeps: apt-get failed (see /tmp/anyjob-apt.log); what needs ${missing[*]} will say it was skipped"
  fi
else
  echo "sysdeps: SKIPPED installing ${missing[*]} (not root or no apt-get)."
  echo "         Install them with: sudo apt-get install ${missing[*]}"
fi
exit 0
