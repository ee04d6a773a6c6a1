#!/usr/bin/env bash
# The project's test command (`make test`, and so CI): fast tests, the slow end-to-end ones, then the SLURM
# integration test on a real single-node SLURM that tests/integration/slurm.sh installs (apt-get, needs root),
# starts and stops again. SKIP_SLURM=1 skips that last part (e.g. on a machine where you are not root).
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
status=0
run() {  # pytest exits 5 when a selection holds no test: that is not a failure here
  "$@"; local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then status=$rc; fi
}
run pytest -q
# The front-page test drives a real headless Chromium (tests/test_index_browser.py); install Debian's when root.
if ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } \
    >/dev/null || echo "test.sh: could not install chromium; the browser test will be skipped" >&2
fi
run pytest -q -m slow
if [ "${SKIP_SLURM:-0}" != 1 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  if bash tests/integration/slurm.sh start; then
    run pytest -q -m slurm tests/integration
  else
    echo "test.sh: could not start the local SLURM cluster" >&2; status=1
  fi
  bash tests/integration/slurm.sh stop || status=1
else
  echo "test.sh: SLURM integration test skipped (needs root and apt-get; SKIP_SLURM=${SKIP_SLURM:-0})"
fi
exit $status
