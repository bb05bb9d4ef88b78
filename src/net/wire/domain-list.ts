/**
 * Lists of domain names in uncompressed DNS wire form (RFC 1035 §3.1), as
 * carried by the NDP DNS Search List option (RFC 8106 §5.2) and the DHCPv6
 * Domain Search List option (RFC 8415 §21 / RFC 3646 §4).
 *
 * Theory of operation: each name is its labels, each a length byte (1..63)
 * and the bytes, ended by a zero byte; names follow each other with no
 * compression pointers (unlike DHCPv4's option 119). `encodeDomainList`
 * skips names that cannot be encoded (an empty or over-long label, a name
 * over 255 bytes) rather than throw: the list comes from configuration
 * that was checked elsewhere, and a reply with one name fewer is better
 * than none. `parseDomainList` takes a guest's or a peer's bytes with
 * every length checked and a bound on the number of names; with
 * `zeroPadding` (DNSSL), zero bytes after the last name are padding.
 */

/** Longest encoded name, length bytes and the final zero included (RFC 1035 §3.1). */
export const MAX_ENCODED_NAME_LENGTH = 255;
/** Most names `parseDomainList` returns before it gives up. */
export const MAX_DOMAIN_LIST_NAMES = 32;

/** One name's wire form, or null if it cannot be encoded. */
export function encodeDomainName(name: string): Uint8Array | null {
  const trimmed = name.endsWith('.') ? name.slice(0, -1) : name;
  if (trimmed.length === 0) return null;
  const labels = trimmed.split('.').map((l) => new TextEncoder().encode(l));
  const size = labels.reduce((n, l) => n + 1 + l.length, 1);
  if (size > MAX_ENCODED_NAME_LENGTH || labels.some((l) => l.length === 0 || l.length > 63)) return null;
  const out = new Uint8Array(size);
  let pos = 0;
  for (const label of labels) {
    out[pos++] = label.length;
    out.set(label, pos);
    pos += label.length;
  }
  out[pos] = 0;
  return out;
}

/** The names one after another (those that cannot be encoded are left out). */
export function encodeDomainList(names: readonly string[]): Uint8Array {
  const parts = names.map(encodeDomainName).filter((p): p is Uint8Array => p !== null);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/**
 * The names in `bytes` (labels joined with dots, bytes as Latin-1
 * characters), or a reason: 'compressed_name' (a pointer: not allowed
 * here), 'bad_label' (the reserved 01/10 length prefixes), 'truncated',
 * 'name_too_long', 'too_many_names', 'empty_name' (a lone zero byte where a
 * name should be, when `zeroPadding` is false), 'bad_padding' (non-zero
 * bytes after padding began).
 */
export function parseDomainList(bytes: Uint8Array, zeroPadding: boolean): string[] | string {
  const names: string[] = [];
  let pos = 0;
  while (pos < bytes.length) {
    if (bytes[pos] === 0) {
      if (!zeroPadding) return 'empty_name';
      for (let i = pos; i < bytes.length; i++) if (bytes[i] !== 0) return 'bad_padding';
      break;
    }
    if (names.length === MAX_DOMAIN_LIST_NAMES) return 'too_many_names';
    const start = pos;
    const labels: string[] = [];
    for (;;) {
      if (pos >= bytes.length) return 'truncated';
      const len = bytes[pos]!;
      if ((len & 0xc0) === 0xc0) return 'compressed_name';
      if ((len & 0xc0) !== 0) return 'bad_label';
      if (pos + 1 + len > bytes.length) return 'truncated';
      if (pos + 1 + len - start > MAX_ENCODED_NAME_LENGTH) return 'name_too_long';
      if (len === 0) {
        pos++;
        break;
      }
      labels.push(String.fromCharCode(...bytes.subarray(pos + 1, pos + 1 + len)));
      pos += 1 + len;
    }
    names.push(labels.join('.'));
  }
  return names;
}
