#!/usr/bin/env bash
# Installs from Debian's packages whichever of the given tools this machine lacks, each given
# as command:package. The package lists are updated first: a fresh machine has none.
#
#   bench/install-missing.sh nginx:nginx-light wrk:wrk
set -euo pipefail
missing=()
for pair in "$@"; do
  command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
done
if ((${#missing[@]})); then
  echo "installing ${missing[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
