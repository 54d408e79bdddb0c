/**
 * Debian version ordering (deb-version(7), dpkg's lib/dpkg/version.c):
 * [epoch:]upstream[-revision], each part compared by alternating runs of
 * non-digits (letters before everything else, `~` before even the end) and
 * numbers. `beadm diff` uses it to tell an upgrade from a downgrade without a
 * dpkg process per package. Pure.
 */

interface ParsedVersion {
  epoch: number;
  upstream: string;
  revision: string;
}

function parse(version: string): ParsedVersion {
  const text = version.trim();
  const colon = text.indexOf(':');
  const epoch = colon > 0 && /^\d+$/.test(text.slice(0, colon)) ? Number(text.slice(0, colon)) : 0;
  const rest = colon > 0 && /^\d+$/.test(text.slice(0, colon)) ? text.slice(colon + 1) : text;
  const dash = rest.lastIndexOf('-');
  return dash < 0 ? { epoch, upstream: rest, revision: '' } : { epoch, upstream: rest.slice(0, dash), revision: rest.slice(dash + 1) };
}

/** dpkg's order of one character in a non-digit run: ~ lowest, then the end, letters, then the rest by code. */
function order(character: string | undefined): number {
  if (character === undefined) return 0;
  if (character === '~') return -1;
  if (/\d/.test(character)) return 0;
  if (/[A-Za-z]/.test(character)) return character.charCodeAt(0);
  return character.charCodeAt(0) + 256;
}

function comparePart(a: string, b: string): number {
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    let firstDifference = 0;
    while ((i < a.length && !/\d/.test(a[i]!)) || (j < b.length && !/\d/.test(b[j]!))) {
      const ac = order(a[i]);
      const bc = order(b[j]);
      if (ac !== bc) return ac - bc;
      i++;
      j++;
    }
    while (a[i] === '0') i++;
    while (b[j] === '0') j++;
    while (i < a.length && /\d/.test(a[i]!) && j < b.length && /\d/.test(b[j]!)) {
      if (firstDifference === 0) firstDifference = a.charCodeAt(i) - b.charCodeAt(j);
      i++;
      j++;
    }
    if (i < a.length && /\d/.test(a[i]!)) return 1;
    if (j < b.length && /\d/.test(b[j]!)) return -1;
    if (firstDifference !== 0) return firstDifference;
  }
  return 0;
}

/** Negative when `a` sorts before `b` (an older version), 0 when equal, positive when after; as `dpkg --compare-versions`. */
export function compareVersions(a: string, b: string): number {
  const left = parse(a);
  const right = parse(b);
  if (left.epoch !== right.epoch) return left.epoch - right.epoch;
  return comparePart(left.upstream, right.upstream) || comparePart(left.revision, right.revision);
}
