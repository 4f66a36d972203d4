#!/usr/bin/env bash
# Install and start what the server and studio tests need beyond Python: PostgreSQL (the production
# store) and Chromium (the studio's end-to-end tests), from Debian's packages. Needs root. Prints the
# environment the tests read; `.ci/run` evaluates it:
#   eval "$(./scripts/ci-services.sh)"
# Without these, the PostgreSQL and browser tests skip (a developer's laptop); CI requires them.
set -euo pipefail
need=()
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
[ -x /usr/bin/chromium ] || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >&2  # with recommends: fonts for the browser
fi
read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
[ "$status" = online ] || pg_ctlcluster "$version" "$cluster" start >&2
su postgres -c "psql -q -p $port -c \"ALTER USER postgres PASSWORD 'postgres'\"" >&2
su postgres -c "psql -q -p $port -tc \"SELECT 1 FROM pg_database WHERE datname = 'egaku_test'\"" | grep -q 1 \
  || su postgres -c "createdb -p $port egaku_test" >&2
echo "export EGAKU_TEST_POSTGRES_URL=postgresql://postgres:postgres@127.0.0.1:$port/egaku_test"
echo "export EGAKU_REQUIRE_BROWSER=1"
