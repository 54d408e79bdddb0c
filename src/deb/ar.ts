/**
 * The ar container of a .deb (deb(5)), checked before anything streams: pure
 * and strict parsers of the 60-byte member headers and of the member layout
 * dpkg accepts — `debian-binary` (format 2.x), `control.tar[.gz|.xz|.zst]`,
 * optional `_`-prefixed members, `data.tar[.gz|.xz|.zst]`, ignorable members
 * after it. Every member must lie inside the file and the members must end
 * exactly at its end: a truncated or padded archive is refused here, so that
 * the streaming reader (ar-async) only ever sees a well-formed archive.
 */
import { BootenvError } from '../errors.js';

export const AR_MAGIC = '!<arch>\n';
export const AR_HEADER_SIZE = 60;
/** More members than any .deb has; a bound on the work a hostile archive can ask for. */
const MAX_MEMBERS = 16;
/** debian-binary holds "2.0\n"; anything long is not a .deb. */
const MAX_DEBIAN_BINARY_SIZE = 64;

export type Compression = 'xz' | 'zstd' | 'gzip' | 'none';

export interface ArMember {
  name: string;
  /** Offset of the member's data in the file. */
  offset: number;
  size: number;
}

export interface DebLayout {
  debianBinary: ArMember;
  control: ArMember & { compression: Compression };
  data: ArMember & { compression: Compression };
}

export function malformed(what: string, detail: string): BootenvError {
  return new BootenvError('PARSE', `${what} is not a valid .deb: ${detail}`);
}

/** Parses one member header: name (GNU style "name/" or plain), decimal size, the "`\n" trailer. */
export function parseArMemberHeader(header: Buffer, what: string): { name: string; size: number } {
  if (header.length !== AR_HEADER_SIZE) throw malformed(what, 'truncated ar member header');
  if (header.toString('latin1', 58, 60) !== '`\n') throw malformed(what, 'ar member header without its "`\\n" trailer');
  const name = header.toString('latin1', 0, 16).trimEnd().replace(/\/$/, '');
  if (!/^[A-Za-z0-9_.+-]{1,15}$/.test(name)) throw malformed(what, `ar member name ${JSON.stringify(name)}`);
  const sizeField = header.toString('latin1', 48, 58).trimEnd();
  if (!/^\d{1,10}$/.test(sizeField)) throw malformed(what, `ar member ${name} has size field ${JSON.stringify(sizeField)}`);
  return { name, size: Number(sizeField) };
}

/** The offset after a member: header, data, and the pad byte that keeps members at even offsets. */
export function nextMemberOffset(member: ArMember): number {
  return member.offset + member.size + (member.size % 2);
}

const COMPRESSIONS: Record<string, Compression> = { '': 'none', '.gz': 'gzip', '.xz': 'xz', '.zst': 'zstd' };

function tarMember(member: ArMember, stem: 'control.tar' | 'data.tar', what: string): ArMember & { compression: Compression } {
  const suffix = member.name.slice(stem.length);
  const compression = COMPRESSIONS[suffix];
  if (!member.name.startsWith(stem) || compression === undefined) {
    throw malformed(what, `${member.name}: unsupported member (bootenv reads ${stem} compressed with xz, zstd, gzip or not at all)`);
  }
  if (member.size === 0) throw malformed(what, `${member.name} is empty`);
  return { ...member, compression };
}

/**
 * Checks the members found in a file of `fileSize` bytes against deb(5) and
 * returns where the three that matter are. `members` come from
 * parseArMemberHeader in file order, with their data offsets.
 */
export function planDebLayout(members: readonly ArMember[], fileSize: number, what: string): DebLayout {
  if (members.length > MAX_MEMBERS) throw malformed(what, `more than ${MAX_MEMBERS} ar members`);
  for (const member of members) {
    if (member.offset + member.size > fileSize) throw malformed(what, `ar member ${member.name} is truncated (${member.size} bytes declared, ${Math.max(0, fileSize - member.offset)} present)`);
  }
  const [debianBinary, control, ...rest] = members;
  if (debianBinary === undefined) throw malformed(what, 'the ar archive has no members (truncated?)');
  if (debianBinary.name !== 'debian-binary') throw malformed(what, 'the first ar member is not debian-binary');
  if (debianBinary.size > MAX_DEBIAN_BINARY_SIZE) throw malformed(what, 'debian-binary is too long');
  if (control === undefined) throw malformed(what, 'no control.tar member');
  const dataIndex = rest.findIndex((member) => !member.name.startsWith('_'));
  const data = rest[dataIndex];
  if (data === undefined) throw malformed(what, 'no data.tar member');
  return { debianBinary, control: tarMember(control, 'control.tar', what), data: tarMember(data, 'data.tar', what) };
}

/** debian-binary must say format 2 ("2.0\n"; dpkg accepts any 2.x). */
export function checkDebianBinary(content: Buffer, what: string): void {
  if (!/^2\.\d+\n/.test(content.toString('latin1'))) throw malformed(what, `debian-binary says ${JSON.stringify(content.toString('latin1'))}, not format 2.x`);
}
