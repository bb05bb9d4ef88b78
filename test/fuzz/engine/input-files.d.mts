export type InputPrefix = 'crash' | 'timeout' | 'input';
/** `<prefix>-<sha1 of the bytes, 16 hex digits>`: the same input always gets the same name. */
export function inputName(prefix: InputPrefix, data: Uint8Array): string;
/** Write an input to `dir` (once per distinct input) and return its path. */
export function saveInput(dir: string, prefix: InputPrefix, data: Uint8Array): string;
