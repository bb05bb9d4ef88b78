#!/usr/bin/env bash
# The whole test suite: the bounded coverage-guided fuzz run (npm run fuzz:
# each target counts as one test), unit, conformance and fuzz tests, then the
# QEMU guest tests. Builds what it needs first (addon, test guest). Ends with
# one line "N passed, N failed, N skipped" over all runs.
set -uo pipefail
cd "$(dirname "$0")/.."
set -e
bash scripts/setup-host.sh
[ -f build/Release/vhost_user_net.node ] || [ -d prebuilds ] || npx node-gyp rebuild
# Strict type check of src, tests, bench and config.
npx tsc -p tsconfig.check.json
# The addon's own C++ tests, built by cmake-js from the same source list.
npm run --silent native:test
bash scripts/build-guest.sh
set +e
mkdir -p .cache/test-results
rm -f .cache/test-results/*.json
# First, so an input it finds (written to test/fuzz/regressions/) is replayed by the unit run below too.
npm run --silent fuzz -- --report .cache/test-results/fuzz.json
fuzz=$?
npx vitest run --project unit --reporter=default --reporter=json --outputFile.json=.cache/test-results/unit.json
unit=$?
npx vitest run --project vm --reporter=default --reporter=json --outputFile.json=.cache/test-results/vm.json
vm=$?
node scripts/test-summary.mjs .cache/test-results/fuzz.json .cache/test-results/unit.json .cache/test-results/vm.json
summary=$?
[ $fuzz -eq 0 ] && [ $unit -eq 0 ] && [ $vm -eq 0 ] && [ $summary -eq 0 ]
