// `npm test`: compiles each test/*.test.ts with esbuild (the sources it imports and the JSON
// fixtures bundled in) and runs them with Node's own test runner, so the tests need nothing
// the build does not already have.
import * as esbuild from 'esbuild';
import { spawnSync } from 'node:child_process';
import { readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, '..', 'node_modules', '.cache', 'streamchat-tests');
const tests = readdirSync(here)
  .filter(name => name.endsWith('.test.ts'))
  .sort();
if (tests.length === 0) {
  console.error(`no *.test.ts files in ${here}`);
  process.exit(1);
}

rmSync(outdir, { recursive: true, force: true });
await esbuild.build({
  entryPoints: tests.map(name => join(here, name)),
  outdir,
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  sourcemap: 'inline', // failures point at the TypeScript lines
  logLevel: 'warning'
});

const compiled = tests.map(name => join(outdir, name.replace(/\.ts$/, '.mjs')));
const run = spawnSync(process.execPath, ['--enable-source-maps', '--test', ...compiled], {
  stdio: 'inherit'
});
process.exit(run.status ?? 1);
