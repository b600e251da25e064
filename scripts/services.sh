#!/usr/bin/env bash
# Starts the local services the service-backed tests use (Redis 6379, NATS with JetStream 4222, PostgreSQL 5432
# with trust auth on loopback and a database `test`) if they are down.
set -euo pipefail

up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() {
  local port=$1 name=$2
  for _ in $(seq 1 50); do up "$port" && return 0; sleep 0.2; done
  echo "services: $name did not come up on 127.0.0.1:$port" >&2
  return 1
}

if ! up 6379; then
  echo "services: starting Redis on 127.0.0.1:6379"
  if ! command -v redis-server >/dev/null; then apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; fi
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 6379 Redis
fi

if ! up 4222; then
  echo "services: starting NATS (JetStream) on 127.0.0.1:4222"
  if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
    apt-get update -qq && apt-get install -y -qq nats-server >/dev/null
  fi
  nats=$(command -v nats-server || echo /usr/sbin/nats-server)
  mkdir -p /var/lib/nats-server
  start-stop-daemon --start --oknodo --background --exec "$nats" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_for 4222 NATS
fi
if ! up 5432; then
  echo "services: starting PostgreSQL on 127.0.0.1:5432"
  if ! command -v pg_lsclusters >/dev/null || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
  fi
  version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
  if ! pg_lsclusters --no-header | awk '{print $1, $2}' | grep -qx "$version main"; then
    pg_createcluster "$version" main -p 5432 -- --auth-local=trust --auth-host=trust >/dev/null
  fi
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  # Tests connect as postgres without a password over loopback, as on the development machines.
  if ! grep -qE '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
  fi
  pg_ctlcluster "$version" main start || pg_ctlcluster "$version" main reload
  wait_for 5432 PostgreSQL
fi
if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -qx 1; then
  echo "services: creating the PostgreSQL database test"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
fi
echo "services: Redis, NATS and PostgreSQL are up"
