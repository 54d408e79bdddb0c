// beadm's launcher, dist/beadm.js (scripts/build.mjs writes this file and a
// call `launch(BUILD)` after it, BUILD being a hash of the bundle). It runs the
// bundle, beadm-bundle.js beside it, compiled with V8's code cache: Node's own
// start is half of a `beadm list`, and compiling the 0.8 MB bundle cost a tenth
// of it, every run, because Debian's nodejs keeps no code cache of its own.
// The cache is in /run/bootenv/private (root's alone, gone at reboot: nothing
// on the root filesystem changes); the first run after a boot, or after an
// upgrade of bootenv or of nodejs, writes it as it exits. V8 rejects a cache
// of another V8 or of other flags, and the cache's name carries BUILD and the
// bundle's size and time, so a cache only ever meets the bundle it was made
// from. Any failure to read or write a cache just compiles as Node would.
// Plain CommonJS, Node's modules only.
'use strict';
const fs = require('node:fs');
const Module = require('node:module');
const path = require('node:path');
const vm = require('node:vm');

const CACHE_DIRECTORY = '/run/bootenv/private';
const CACHE_PREFIX = 'beadm-code-cache-';

/** Whether `stat` is of something only root can change (root's, not writable by group or others). */
function rootsAlone(stat) {
  return stat.uid === 0 && (stat.mode & 0o022) === 0;
}

/** The cache's bytes, when root alone could have written them; else undefined. */
function readCache(cacheFile) {
  let descriptor;
  try {
    const directory = fs.lstatSync(CACHE_DIRECTORY);
    if (!directory.isDirectory() || !rootsAlone(directory)) return undefined;
    descriptor = fs.openSync(cacheFile, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    const stat = fs.fstatSync(descriptor);
    return stat.isFile() && rootsAlone(stat) ? fs.readFileSync(descriptor) : undefined;
  } catch {
    return undefined;
  } finally {
    if (descriptor !== undefined) fs.closeSync(descriptor);
  }
}

/** Writes the cache of `script` (with what this run compiled) in place of any other. */
function writeCache(cacheFile, script) {
  try {
    // beadm makes the directory (and /run/bootenv, which others may read) when it first mounts anything.
    const directory = fs.lstatSync(CACHE_DIRECTORY);
    if (!directory.isDirectory() || !rootsAlone(directory)) return;
    for (const name of fs.readdirSync(CACHE_DIRECTORY)) {
      if (name.startsWith(CACHE_PREFIX)) fs.rmSync(path.join(CACHE_DIRECTORY, name), { force: true });
    }
    const temporary = `${cacheFile}.${process.pid}`;
    fs.writeFileSync(temporary, script.createCachedData(), { mode: 0o600, flag: 'wx' });
    fs.renameSync(temporary, cacheFile);
  } catch {
    // Only a cache: the next run compiles again.
  }
}

/** Compiles the bundle (with the cache of BUILD when root runs us and there is one) and runs it as this module. */
function launch(BUILD) {
  const bundleFile = path.join(__dirname, 'beadm-bundle.js');
  const descriptor = fs.openSync(bundleFile, 'r');
  let source;
  let stat;
  try {
    stat = fs.fstatSync(descriptor);
    source = fs.readFileSync(descriptor, 'utf8');
  } finally {
    fs.closeSync(descriptor);
  }
  const root = process.getuid?.() === 0;
  const cacheFile = path.join(CACHE_DIRECTORY, `${CACHE_PREFIX}${BUILD}-${stat.size}-${Math.trunc(stat.mtimeMs)}-${process.version}-${process.arch}`);
  const cachedData = root ? readCache(cacheFile) : undefined;
  const script = new vm.Script(Module.wrap(source), { filename: bundleFile, cachedData });
  if (root && (cachedData === undefined || script.cachedDataRejected)) process.once('exit', () => writeCache(cacheFile, script));
  script.runInThisContext()(exports, require, module, bundleFile, __dirname);
}
