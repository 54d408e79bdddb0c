// The three-way merge of the account databases (src/be/accounts.ts) on the files of a Debian 12
// root: an admin's useradd in the running system and a postinst's adduser --system in the new BE
// both survive; what cannot be merged keeps the new BE's entry and is reported.
import { describe, expect, it } from 'vitest';
import { mergeAccountFile } from '../../src/be/accounts.js';

const passwd = [
  'root:x:0:0:root:/root:/bin/bash',
  'daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin',
  '_apt:x:42:65534::/nonexistent:/usr/sbin/nologin',
  'nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin',
].join('\n') + '\n';
const alice = 'alice:x:1000:1000::/home/alice:/bin/sh';
const system = '_bootenv-t-carry:x:100:65534::/nonexistent:/usr/sbin/nologin';

const group = ['root:x:0:', 'sudo:x:27:', 'users:x:100:', 'nogroup:x:65534:'].join('\n') + '\n';
const shadow = ['root:*:19000:0:99999:7:::', 'daemon:*:19000:0:99999:7:::'].join('\n') + '\n';

describe('mergeAccountFile passwd', () => {
  it("keeps the admin's user and the package's system user", () => {
    const merge = mergeAccountFile('passwd', passwd, `${passwd}${alice}\n`, `${passwd}${system}\n`);
    expect(merge.text).toBe(`${passwd}${system}\n${alice}\n`);
    expect(merge).toMatchObject({ added: ['alice'], changed: [], removed: [], clashes: [] });
  });

  it('takes a change made on one side only, and a removal made in the origin', () => {
    const origin = passwd.replace('daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n', '').replace('root:/root:/bin/bash', 'root:/root:/bin/zsh');
    const merge = mergeAccountFile('passwd', passwd, origin, `${passwd}${system}\n`);
    expect(merge.text).toBe(`root:x:0:0:root:/root:/bin/zsh\n_apt:x:42:65534::/nonexistent:/usr/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n${system}\n`);
    expect(merge).toMatchObject({ changed: ['root'], removed: ['daemon'], clashes: [] });
  });

  it.each([
    ['the same name added with different entries', `${passwd}svc:x:1001:1001::/home/svc:/bin/sh\n`, `${passwd}svc:x:101:65534::/nonexistent:/usr/sbin/nologin\n`, 'svc', /added in both boot environments with different entries/],
    ['a uid the new BE gave to another name', `${passwd}svc:x:100:65534::/srv:/usr/sbin/nologin\n`, `${passwd}${system}\n`, 'svc', /uid 100 is _bootenv-t-carry's in the new boot environment/],
    ['a field changed both ways', passwd.replace('/root:/bin/bash', '/root:/bin/zsh'), passwd.replace('/root:/bin/bash', '/root:/bin/dash'), 'root', /changed in both boot environments \(field 7\)/],
    ['removed in the origin, changed in the new BE', passwd.replace(/^_apt.*\n/m, ''), passwd.replace('_apt:x:42:65534::', '_apt:x:42:65534:APT:'), '_apt', /removed in the origin, changed in the new boot environment/],
  ])('reports %s and keeps the new BE’s entries', (_, origin, current, name, reason) => {
    const merge = mergeAccountFile('passwd', passwd, origin, current);
    expect(merge.text).toBe(current);
    expect(merge.clashes).toEqual([{ file: 'passwd', name, reason: expect.stringMatching(reason) }]);
    expect(merge.refused).toEqual(new Set([name]));
  });

  it('a uid changed in the origin to one the new BE gave away goes back to the new BE’s entry', () => {
    const origin = passwd.replace('daemon:x:1:1', 'daemon:x:100:1');
    const merge = mergeAccountFile('passwd', passwd, origin, `${passwd}${system}\n`);
    expect(merge.text).toBe(`${passwd}${system}\n`);
    expect(merge.changed).toEqual([]);
    expect(merge.clashes[0]?.reason).toMatch(/uid 100/);
  });

  it('refuses a file it cannot read entry by entry', () => {
    expect(() => mergeAccountFile('passwd', passwd, `${passwd}broken line\n`, passwd)).toThrow(/1 fields, not 7/);
    expect(() => mergeAccountFile('passwd', passwd, `${passwd}${alice}\n${alice}\n`, passwd)).toThrow(/listed twice/);
  });
});

describe('mergeAccountFile group, shadow, gshadow, subuid', () => {
  it('merges member lists as sets: usermod -aG in the origin, a postinst adding its user to the same group', () => {
    const origin = group.replace('sudo:x:27:', 'sudo:x:27:alice');
    const current = group.replace('sudo:x:27:', 'sudo:x:27:_svc');
    expect(mergeAccountFile('group', group, origin, current).text).toBe(group.replace('sudo:x:27:', 'sudo:x:27:_svc,alice'));
    const removed = mergeAccountFile('group', group.replace('sudo:x:27:', 'sudo:x:27:bob'), group, group.replace('sudo:x:27:', 'sudo:x:27:bob,_svc'));
    expect(removed.text).toBe(group.replace('sudo:x:27:', 'sudo:x:27:_svc'));
  });

  it('a gid clash in group', () => {
    const merge = mergeAccountFile('group', group, `${group}alice:x:1000:\n`, `${group}_svc:x:1000:\n`);
    expect(merge.clashes).toEqual([{ file: 'group', name: 'alice', reason: expect.stringMatching(/gid 1000 is _svc's/) }]);
  });

  it("shadow: a password changed in the origin is carried; a user refused in passwd gets no shadow entry", () => {
    const origin = shadow.replace('root:*:', 'root:$y$j9T$hash:');
    expect(mergeAccountFile('shadow', shadow, origin, shadow).text).toBe(origin);
    const withSvc = `${shadow}svc:!:19500:0:99999:7:::\n`;
    const merge = mergeAccountFile('shadow', shadow, withSvc, shadow, new Set(['svc']));
    expect(merge.text).toBe(shadow);
    expect(merge.clashes[0]?.reason).toMatch(/not added/);
  });

  it('gshadow: admins and members merged as sets', () => {
    const base = 'sudo:*::\n';
    expect(mergeAccountFile('gshadow', base, 'sudo:*::alice\n', 'sudo:*:root:_svc\n').text).toBe('sudo:*:root:_svc,alice\n');
  });

  it('subuid: ranges added in the origin, unless they overlap another name’s', () => {
    const base = 'root:100000:65536\n';
    expect(mergeAccountFile('subuid', base, `${base}alice:165536:65536\n`, base).text).toBe(`${base}alice:165536:65536\n`);
    const clash = mergeAccountFile('subuid', base, `${base}alice:165536:65536\n`, `${base}svc:200000:65536\n`);
    expect(clash.text).toBe(`${base}svc:200000:65536\n`);
    expect(clash.clashes[0]?.reason).toMatch(/overlaps svc's/);
    expect(mergeAccountFile('subuid', `${base}bob:165536:65536\n`, base, `${base}bob:165536:65536\n`).text).toBe(base);
  });
});
