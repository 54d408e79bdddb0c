#!/bin/bash
# Builds the Debian package from this checkout: dist/deb/bootenv_<version>_<arch>.deb
# (npm run deb). Needs debhelper and dpkg-dev; runs npm ci for esbuild if node_modules lacks it.
# dpkg-buildpackage works in a tree of its own and writes its results beside it: the
# checkout's files are copied into a private directory under dist/ and built there,
# so that two builds at once (two test runs, two checkouts in one parent directory)
# never share a file; the results are moved into dist/deb/, the directory removed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/esbuild ] || npm ci --no-audit --no-fund
version=$(dpkg-parsechangelog -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
mkdir -p dist/deb
work=$(mktemp -d "$PWD/dist/.deb-build.XXXXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir "$work/bootenv"
tar -c --exclude=./node_modules --exclude=./dist --exclude=./.cache --exclude=./test-artifacts --exclude=./.git \
  --exclude=./debian/bootenv --exclude=./debian/.debhelper -f - . | tar -x -C "$work/bootenv" -f -
ln -s "$PWD/node_modules" "$work/bootenv/node_modules"
(cd "$work/bootenv" && dpkg-buildpackage -b -us -uc --no-pre-clean >/dev/null)
for file in "$work"/bootenv_"$version"_"$arch".deb "$work"/bootenv_"$version"_*.buildinfo "$work"/bootenv_"$version"_*.changes; do
  [ -e "$file" ] && mv -f "$file" dist/deb/
done
echo "dist/deb/bootenv_${version}_${arch}.deb"
