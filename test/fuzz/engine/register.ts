/**
 * `node --import tsx --import ./test/fuzz/engine/register.ts ...`: turns on
 * coverage instrumentation of src/ for this process (see hooks.ts).
 */
import { register } from 'node:module';

register('./hooks.ts', import.meta.url, { data: { src: new URL('../../../src/', import.meta.url).href } });
