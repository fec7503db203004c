#!/usr/bin/env node
/*
 * Build the prebuilt labextension with node alone: what `jupyter labextension
 * build .` does, without needing JupyterLab's Python package.
 *
 * @jupyterlab/builder needs JupyterLab's core metadata (the versions of the
 * packages JupyterLab shares with extensions, and which are singletons) as
 * <core-path>/package.json.  @jupyterlab/core-meta ships it as
 * core.package.json, beside a package.json of its own, so it is copied into a
 * directory of ours first.  Output: package.json "jupyterlab.outputDir".
 *
 *   node scripts/build-labextension.js [--development]
 */
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const here = path.resolve(__dirname, '..');
const coreMeta = require.resolve('@jupyterlab/core-meta/core.package.json', { paths: [here] });
const builder = require.resolve('@jupyterlab/builder/lib/build-labextension.js', { paths: [here] });

const coreDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sbk-labext-core-'));
try {
  fs.copyFileSync(coreMeta, path.join(coreDir, 'package.json'));
  const args = [builder, '--core-path', coreDir, ...process.argv.slice(2), here];
  execFileSync(process.execPath, args, { cwd: here, stdio: 'inherit' });
} finally {
  fs.rmSync(coreDir, { recursive: true, force: true });
}
