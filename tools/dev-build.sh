#!/usr/bin/env bash
# Rebuild the editable install (C++ extension included) into .venv. Serialised with a lock so that several
# developers/helpers sharing one checkout never run two builds in the same build directory at once.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
exec flock /tmp/loglik-dev-build.lock \
  pip install --no-build-isolation --no-deps -q -e . -Cbuild-dir=build/dev -Ceditable.rebuild=false "$@"
