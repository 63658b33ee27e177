# Sourced by .ci/run: start a throw-away PostgreSQL server on localhost for the sweep storage tests and export
# ALEMBERT_TEST_POSTGRES_URL. Uses the distribution's server (installed with apt-get when missing); the data
# directory lives under a temporary folder and the server stops when the sourcing shell exits.
# Standalone use: `source .ci/postgres.sh` in your shell (stop it with `pg_ctl -D "$ALEMBERT_PG_DIR/data" stop`).

_pg_bin() {
    local dir
    for dir in /usr/lib/postgresql/*/bin; do
        [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
    done
    command -v pg_ctl >/dev/null 2>&1 && { dirname "$(command -v pg_ctl)"; return 0; }
    return 1
}

_pg_as_owner() {
    # The server refuses to run as root: as root, run it as the `postgres` user the package creates.
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if ! PG_BIN="$(_pg_bin)"; then
    echo "postgres.sh: installing PostgreSQL with apt-get" >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    PG_BIN="$(_pg_bin)" || { echo "postgres.sh: no PostgreSQL server could be installed" >&2; return 1; }
fi

ALEMBERT_PG_DIR="$(mktemp -d /tmp/alembert-pg.XXXXXX)"
ALEMBERT_PG_PORT="${ALEMBERT_PG_PORT:-$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
[ "$(id -u)" = 0 ] && chown postgres "$ALEMBERT_PG_DIR"
_pg_as_owner "$PG_BIN/initdb" -D "$ALEMBERT_PG_DIR/data" -U alembert --auth=trust -E UTF8 >/dev/null
_pg_as_owner "$PG_BIN/pg_ctl" -D "$ALEMBERT_PG_DIR/data" -l "$ALEMBERT_PG_DIR/server.log" -w \
    -o "-p $ALEMBERT_PG_PORT -k $ALEMBERT_PG_DIR -c listen_addresses=127.0.0.1 -c max_connections=50" start >/dev/null \
    || { cat "$ALEMBERT_PG_DIR/server.log" >&2; return 1; }
_pg_as_owner "$PG_BIN/createdb" -h 127.0.0.1 -p "$ALEMBERT_PG_PORT" -U alembert alembert_test
export ALEMBERT_TEST_POSTGRES_URL="postgresql+psycopg2://alembert@127.0.0.1:$ALEMBERT_PG_PORT/alembert_test"
export ALEMBERT_PG_DIR
trap '_pg_as_owner "$PG_BIN/pg_ctl" -D "$ALEMBERT_PG_DIR/data" -m fast stop >/dev/null 2>&1; rm -rf "$ALEMBERT_PG_DIR"' EXIT
echo "postgres.sh: PostgreSQL running at $ALEMBERT_TEST_POSTGRES_URL" >&2
