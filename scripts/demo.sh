#!/bin/bash
# One command for a fresh machine (as root): installs what is needed, builds
# beadm, and runs the demo story on a sandbox loop image with a debootstrapped
# Debian 12 root laid out like an Ubuntu install. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
npm ci --no-audit --no-fund
npm run demo
