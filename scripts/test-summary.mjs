// Sum vitest JSON reports into the one closing line CI reads:
// "N passed, N failed, N skipped". A test file that failed to load counts as
// a failure. Exits non-zero if a report is missing, anything failed, or no
// test ran.
import { readFileSync } from 'node:fs';

let passed = 0;
let failed = 0;
let skipped = 0;
let missing = false;
for (const file of process.argv.slice(2)) {
  try {
    const report = JSON.parse(readFileSync(file, 'utf8'));
    passed += report.numPassedTests ?? 0;
    skipped += (report.numPendingTests ?? 0) + (report.numTodoTests ?? 0);
    const brokenFiles = (report.testResults ?? []).filter(
      (r) => r.status === 'failed' && (r.assertionResults ?? []).every((a) => a.status !== 'failed'),
    ).length;
    failed += (report.numFailedTests ?? 0) + brokenFiles;
  } catch (err) {
    console.error(`test-summary: no report ${file}: ${err.message}`);
    missing = true;
  }
}
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(missing || failed > 0 || passed === 0 ? 1 : 0);
