#!/bin/bash
# Builds the Debian package from this checkout: dist/deb/bootenv_<version>_<arch>.deb
# (npm run deb). Needs debhelper and dpkg-dev; runs npm ci for esbuild if node_modules lacks it.
# dpkg-buildpackage writes its results beside the checkout; they are moved into
# dist/deb/ so that nothing is left outside it.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/esbuild ] || npm ci --no-audit --no-fund
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
parent=$(dirname "$PWD")
dpkg-buildpackage -b -us -uc --no-pre-clean >/dev/null
mkdir -p dist/deb
for file in "$parent"/bootenv_"$version"_"$arch".deb "$parent"/bootenv_"$version"_*.buildinfo "$parent"/bootenv_"$version"_*.changes; do
  [ -e "$file" ] && mv "$file" dist/deb/
done
dh_clean
echo "dist/deb/bootenv_${version}_${arch}.deb"
