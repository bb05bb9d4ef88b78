/**
 * The counter names the source can produce, read from src/ itself: every
 * dotted string literal ('udp.drop.bad_checksum') and every template whose
 * literal head is dotted (`tcp.drop.${reason}` allows one more word of
 * letters, digits and underscores after "tcp.drop.", such as an errno
 * name). A counter outside that set means a name was built from something
 * it should not be (a guest's bytes, an error message).
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const LITERAL = /'([a-z0-9_]+(?:\.[a-z0-9_]+)+)'/g;
const TEMPLATE = /`([a-z0-9_]+(?:\.[a-z0-9_]*)+)\$\{/g;
const WORD = /^[A-Za-z0-9_]+$/;

let known: { names: Set<string>; prefixes: string[] } | null = null;

function scan(): { names: Set<string>; prefixes: string[] } {
  const names = new Set<string>();
  const prefixes = new Set<string>();
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir)) {
      const p = path.join(dir, entry);
      if (statSync(p).isDirectory()) walk(p);
      else if (entry.endsWith('.ts')) {
        const text = readFileSync(p, 'utf8');
        for (const m of text.matchAll(LITERAL)) names.add(m[1]!);
        for (const m of text.matchAll(TEMPLATE)) prefixes.add(m[1]!);
      }
    }
  };
  walk(fileURLToPath(new URL('../../src', import.meta.url)));
  return { names, prefixes: [...prefixes] };
}

/** True if the source can produce counter `name`. */
export function isKnownCounterName(name: string): boolean {
  known ??= scan();
  if (known.names.has(name)) return true;
  return known.prefixes.some((p) => name.startsWith(p) && WORD.test(name.slice(p.length)));
}
