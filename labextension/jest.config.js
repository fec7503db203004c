// The JupyterLab extension template's jest setup (@jupyterlab/testing), with
// only the console reporter: `npm test` writes no files.
const jupyterLabJestConfig = require('@jupyterlab/testing/lib/jest-config');

const base = jupyterLabJestConfig(__dirname);

module.exports = {
  ...base,
  automock: false,
  reporters: ['default'],
  testRegex: '/test/.*\\.spec\\.ts$'
};
