#!/usr/bin/env bash
# The official postgres image's entrypoint, reduced to what docker-compose.yaml uses (see the Containerfile).
set -Eeuo pipefail

if [[ "${1:-}" != postgres ]]; then
  exec "$@"
fi

if [[ $(id -u) -eq 0 ]]; then
  # A fresh named volume belongs to root: hand it to postgres, then run this script again as postgres.
  mkdir -p "$PGDATA"
  chown postgres:postgres "$PGDATA"
  chmod 0700 "$PGDATA"
  export HOME=/var/lib/postgresql
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set (the official image refuses to start without it too)}"
POSTGRES_USER=${POSTGRES_USER:-postgres}
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}

if [[ ! -s "$PGDATA/PG_VERSION" ]]; then
  echo "docker-entrypoint.sh: initializing the cluster in $PGDATA (user $POSTGRES_USER, database $POSTGRES_DB)"
  pwfile=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile"
  initdb --username="$POSTGRES_USER" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
  rm -f "$pwfile"
  printf '\nhost all all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
  printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

  # The init scripts run on a server that listens on the Unix socket only, as in the official image: a
  # client polling TCP (pg_isready -h 127.0.0.1) sees the server only once they are done.
  pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w -t 60 start >/dev/null
  psql=(psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc --username "$POSTGRES_USER")
  if [[ "$POSTGRES_DB" != postgres ]]; then
    "${psql[@]}" --dbname postgres --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";' >/dev/null
  fi
  shopt -s nullglob
  for file in /docker-entrypoint-initdb.d/*; do
    case "$file" in
      *.sh)
        echo "docker-entrypoint.sh: running $file"
        # shellcheck disable=SC1090
        . "$file"
        ;;
      *.sql)
        echo "docker-entrypoint.sh: running $file"
        "${psql[@]}" --dbname "$POSTGRES_DB" -f "$file"
        ;;
      *) echo "docker-entrypoint.sh: ignoring $file" ;;
    esac
  done
  pg_ctl -D "$PGDATA" -m fast -w -t 120 stop >/dev/null
  echo "docker-entrypoint.sh: init done; starting the server"
fi

exec "$@"
