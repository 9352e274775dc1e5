// Reads vitest's JSON report and prints "N passed, N failed[, N skipped]" as the last line.
// Exits non-zero when a test failed, a test file failed to run, or no test ran.
import { readFileSync } from "node:fs"

const file = process.argv[2] ?? ".vitest-results.json"

let report
try {
  report = JSON.parse(readFileSync(file, "utf8"))
} catch (err) {
  console.error(`summary: cannot read test results from ${file}: ${err.message}`)
  console.log("0 passed, 0 failed")
  process.exit(1)
}

const num = (v) => (Number.isFinite(v) ? v : 0)
const passed = num(report.numPassedTests)
const failed = num(report.numFailedTests)
const skipped = num(report.numPendingTests) + num(report.numTodoTests)
const failedFiles = num(report.numFailedTestSuites)

let ok = true
if (failed > 0) ok = false
if (failedFiles > 0) {
  console.error(`summary: ${failedFiles} test file(s) failed`)
  ok = false
}
if (report.success === false) ok = false
if (passed + failed === 0) {
  console.error("summary: no test ran")
  ok = false
}

console.log(`${passed} passed, ${failed} failed` + (skipped > 0 ? `, ${skipped} skipped` : ""))
process.exit(ok ? 0 : 1)
