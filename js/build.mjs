// Bundles the front end into one ESM file (and one CSS file) inside the Python package,
// where anywidget loads them from a string: the bundle may not import anything at run time.
import * as esbuild from 'esbuild';

const options = {
  entryPoints: { widget: 'src/widget/index.ts' },
  bundle: true,
  format: 'esm',
  target: 'es2020',
  minify: true,
  sourcemap: false,
  outdir: "../jupyter_streamchat/widget/static",
  loader: { '.css': 'css' },
  logLevel: 'info'
};

if (process.argv.includes('--watch')) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
} else {
  await esbuild.build(options);
}
