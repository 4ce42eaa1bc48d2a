// Bundles the front end twice:
// - the widget: one ESM file (and one CSS file) inside the Python package, which anywidget
//   loads from a string, so it may not import anything at run time;
// - the JupyterLab extension's entry, lib/lab.js (and lib/lab.css), with JupyterLab's and
//   Lumino's packages left as imports: `jupyter labextension build` then shares them with the
//   running JupyterLab rather than shipping copies.
import * as esbuild from 'esbuild';

const common = {
  bundle: true,
  format: 'esm',
  target: 'es2020',
  sourcemap: false,
  loader: { '.css': 'css', '.svg': 'text' },
  logLevel: 'info'
};

const widget = {
  ...common,
  entryPoints: { widget: 'src/widget/index.ts' },
  minify: true,
  outdir: '../jupyter_streamchat/widget/static'
};

const lab = {
  ...common,
  entryPoints: { lab: 'src/lab/index.ts' },
  minify: false, // webpack minifies the extension build
  external: ['@jupyterlab/*', '@lumino/*'],
  outdir: 'lib'
};

if (process.argv.includes('--watch')) {
  for (const options of [widget, lab]) {
    const ctx = await esbuild.context(options);
    await ctx.watch();
  }
} else {
  await Promise.all([esbuild.build(widget), esbuild.build(lab)]);
}
