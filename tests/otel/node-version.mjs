// node-version.mjs - imported first by the browser tests: logs the Node that runs them and, when
// TT_EXPECT_NODE is set (CI sets it to Debian 12's version, see .ci/run), fails unless
// process.version starts with it, so a run under another Node cannot pass for a Node 18 run.

const expect = process.env.TT_EXPECT_NODE || '';
console.log(`[node] ${process.version} (${process.execPath})`);
if (expect && !process.version.startsWith(expect)) {
  console.error(`[node] FAILED: running under Node ${process.version}, TT_EXPECT_NODE=${expect}`);
  process.exit(1);
}
