#!/usr/bin/env bash
# Installs the tools the browser and HTTP-fuzzer tests drive, into git-ignored directories:
#   tests/browser/node_modules   playwright-core (npm), which drives Debian's /usr/bin/chromium
#   .cache/venv                  schemathesis (PyPI), the property-based OpenAPI fuzzer, and
#                                duckdb (PyPI), which reads the master dataset's Delta table, and
#                                psycopg (PyPI), a PostgreSQL-protocol client of the SQL tests,
#                                and SQLAlchemy (PyPI) over it
#   .cache/jdbc                  the PostgreSQL JDBC driver (Maven Central), another one
#   .cache/grafana-client        tests/clients/grafana built with Go: the pgx driver (the Go
#                                module proxy), as Grafana's PostgreSQL data source runs queries
# Chromium itself comes from the system: `scripts/setup.sh test` installs Debian's package.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -d tests/browser/node_modules/playwright-core ]; then
  echo "test-tools: npm ci (playwright-core)" >&2
  npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error >&2
fi
if ! .cache/venv/bin/schemathesis --version 2>/dev/null | grep -q '4\.32\.5'; then
  echo "test-tools: pip install schemathesis into .cache/venv" >&2
  python3 -m venv .cache/venv
  .cache/venv/bin/pip install -q --disable-pip-version-check "schemathesis==4.32.5" >&2
fi
if ! .cache/venv/bin/python -c 'import duckdb; assert duckdb.__version__ == "2.0.1"' 2>/dev/null; then
  echo "test-tools: pip install duckdb into .cache/venv" >&2
  python3 -m venv .cache/venv
  .cache/venv/bin/pip install -q --disable-pip-version-check "duckdb==2.0.1" >&2
fi
if ! .cache/venv/bin/python -c 'import psycopg; assert psycopg.__version__ == "3.2.10"' 2>/dev/null; then
  echo "test-tools: pip install psycopg into .cache/venv" >&2
  python3 -m venv .cache/venv
  .cache/venv/bin/pip install -q --disable-pip-version-check "psycopg[binary]==3.2.10" >&2
fi
if ! .cache/venv/bin/python -c 'import sqlalchemy; assert sqlalchemy.__version__ == "2.1.9"' 2>/dev/null; then
  echo "test-tools: pip install SQLAlchemy into .cache/venv" >&2
  python3 -m venv .cache/venv
  .cache/venv/bin/pip install -q --disable-pip-version-check "SQLAlchemy==2.1.9" >&2
fi
jdbc=.cache/jdbc/postgresql-42.7.14.jar
if [ ! -f "$jdbc" ]; then
  echo "test-tools: fetching the PostgreSQL JDBC driver from Maven Central" >&2
  mkdir -p .cache/jdbc
  mvn -q -B dependency:copy -Dartifact=org.postgresql:postgresql:42.7.14 -DoutputDirectory=.cache/jdbc > .cache/jdbc/mvn.log 2>&1 ||
    { cat .cache/jdbc/mvn.log >&2; echo "test-tools: could not fetch the JDBC driver" >&2; exit 1; }
fi
grafana=.cache/grafana-client
if [ ! -x "$grafana" ] || [ -n "$(find tests/clients/grafana -newer "$grafana" -type f)" ]; then
  command -v go >/dev/null ||
    { echo "test-tools: Go is missing (go.dev/dl; the module needs Go 1.25 or later)" >&2; exit 1; }
  echo "test-tools: go build tests/clients/grafana (pgx)" >&2
  (cd tests/clients/grafana && go build -o ../../../"$grafana" .) >&2
fi
command -v chromium >/dev/null || [ -x "${CHROMIUM:-/usr/bin/chromium}" ] ||
  { echo "test-tools: Chromium is missing (scripts/setup.sh test installs it; or set CHROMIUM)" >&2; exit 1; }
