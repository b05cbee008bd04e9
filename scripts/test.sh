#!/usr/bin/env bash
# Runs taskfleet's whole test suite: unit tests of every crate, the transport and store
# conformance suites, and the integration tests that drive the real `taskfleet` binary.
# Starts (or checks) every service the tests talk to before running them.
#
# Environment: AMQP_ADDR (default amqp://guest:guest@127.0.0.1:5672/%2f), DATABASE_URL
# (default postgres://root@127.0.0.1:5432/test), KAFKA_BROKERS (default 127.0.0.1:9092, where a
# nisshi broker is started when nothing listens; installed with cargo the first time),
# TASKFLEET_SCHEMATHESIS (default: installed under target/tools), TASKFLEET_CHROMIUM and
# TASKFLEET_CHROMEDRIVER (default: Debian's, installed when missing). The dashboard's browser
# test leaves its screenshots under target/test-output/dashboard.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '==> %s\n' "$*" >&2; }

# wait_for_port NAME HOST PORT SECONDS: waits until a TCP port accepts connections.
wait_for_port() {
  local name=$1 host=$2 port=$3 seconds=$4
  for _ in $(seq "$((seconds * 5))"); do
    if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
      log "$name is accepting connections on $host:$port"
      return 0
    fi
    sleep 0.2
  done
  log "$name did not accept connections on $host:$port within ${seconds}s"
  return 1
}

ensure_rabbitmq() {
  if (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; then
    log "RabbitMQ is up"
  else
    log "starting RabbitMQ"
    if ! command -v rabbitmq-server >/dev/null; then
      log "rabbitmq-server is not installed: apt-get install rabbitmq-server"
      return 1
    fi
    rabbitmq-server -detached
    wait_for_port RabbitMQ 127.0.0.1 5672 90
  fi
  # The port opens before the broker accepts logins: wait until it answers.
  if command -v rabbitmq-diagnostics >/dev/null; then
    for _ in $(seq 60); do
      rabbitmq-diagnostics -q check_running >/dev/null 2>&1 && return 0
      sleep 1
    done
    log "RabbitMQ is not running properly"
    return 1
  fi
}

# ensure_postgres: the PostgreSQL store's tests need the server (DATABASE_URL, by default
# postgres://root@127.0.0.1:5432/test) and psql; starts the local cluster if it is down.
ensure_postgres() {
  if ! command -v psql >/dev/null; then
    log "psql is not installed: apt-get install postgresql-client"
    return 1
  fi
  local url=${DATABASE_URL:-postgres://root@127.0.0.1:5432/test}
  if psql "$url" -X -q -c 'SELECT 1' >/dev/null 2>&1; then
    log "PostgreSQL is up"
    return 0
  fi
  log "starting PostgreSQL"
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 60); do
    psql "$url" -X -q -c 'SELECT 1' >/dev/null 2>&1 && { log "PostgreSQL is up"; return 0; }
    sleep 1
  done
  log "PostgreSQL does not accept connections at $url"
  return 1
}

# ensure_kafka: the Kafka transport's tests need a Kafka-protocol broker (KAFKA_BROKERS, by
# default 127.0.0.1:9092). Without one, starts nisshi there (in memory), installing it first
# when missing: `nisshi` 0.8.1 works with librdkafka's consumer groups, including moving a
# killed member's partitions (about 10 minutes to build, once per machine).
NISSHI_VERSION=0.8.1
ensure_kafka() {
  if [ -n "${KAFKA_BROKERS:-}" ]; then
    local first=${KAFKA_BROKERS%%,*}
    wait_for_port Kafka "${first%:*}" "${first##*:}" 30
    return
  fi
  if (exec 3<>/dev/tcp/127.0.0.1/9092) 2>/dev/null; then
    log "a Kafka broker is up on 127.0.0.1:9092"
    return 0
  fi
  local nisshi
  nisshi=$(command -v nisshi || echo "${CARGO_HOME:-$HOME/.cargo}/bin/nisshi")
  if [ ! -x "$nisshi" ] || ! "$nisshi" --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then
    log "installing nisshi $NISSHI_VERSION, a Kafka-protocol broker (about 10 minutes, once)"
    cargo install nisshi --version "$NISSHI_VERSION" --locked --ignore-rust-version \
      --no-default-features --features dynostore
    nisshi="${CARGO_HOME:-$HOME/.cargo}/bin/nisshi"
  fi
  log "starting nisshi on 127.0.0.1:9092"
  # From a directory of its own: nisshi reads a .env file from where it starts.
  mkdir -p target/kafka
  (cd target/kafka && setsid nohup "$nisshi" broker \
    --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 \
    --storage-engine memory://nisshi/ --group-initial-rebalance-delay 0s \
    >nisshi.log 2>&1 </dev/null &)
  wait_for_port Kafka 127.0.0.1 9092 30
}

# ensure_schemathesis: the API test checks the scheduler against its OpenAPI description with
# schemathesis (PyPI), installed in a virtualenv under target/tools when missing.
SCHEMATHESIS_VERSION=4.32.5
ensure_schemathesis() {
  if [ -n "${TASKFLEET_SCHEMATHESIS:-}" ]; then
    log "schemathesis: $TASKFLEET_SCHEMATHESIS"
    return 0
  fi
  local venv=target/tools/venv
  if [ -x "$venv/bin/schemathesis" ] && "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    log "schemathesis $SCHEMATHESIS_VERSION is installed"
  else
    log "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
    mkdir -p target/tools
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  fi
  TASKFLEET_SCHEMATHESIS="$(pwd)/$venv/bin/schemathesis"
  export TASKFLEET_SCHEMATHESIS
}

# ensure_chromium: the dashboard's browser test drives Debian's chromium through chromedriver
# (packages chromium and chromium-driver), installed when missing; TASKFLEET_CHROMIUM and
# TASKFLEET_CHROMEDRIVER name others. Without them the test fails: it is never skipped.
ensure_chromium() {
  local chromium=${TASKFLEET_CHROMIUM:-/usr/bin/chromium} driver=${TASKFLEET_CHROMEDRIVER:-/usr/bin/chromedriver}
  if [ -x "$chromium" ] && [ -x "$driver" ]; then
    log "chromium and chromedriver are installed"
    return 0
  fi
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
    log "chromium and chromedriver are missing: apt-get install chromium chromium-driver"
    return 1
  fi
  log "installing chromium and chromium-driver for the dashboard's browser test"
  local install_log
  install_log=$(mktemp)
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends chromium chromium-driver; } >"$install_log" 2>&1; then
    tail -n 5 "$install_log" >&2
    rm -f "$install_log"
    log "could not install chromium and chromium-driver"
    return 1
  fi
  rm -f "$install_log"
}

# validate_compose: checks docker-compose.yml against the Compose schema with docker-compose,
# installed from Debian's packages if missing. An invalid file fails the run; a tool that
# cannot be installed (no root, no apt-get, no network) only warns.
validate_compose() {
  if ! command -v docker-compose >/dev/null; then
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
      log "WARNING: docker-compose is not installed: docker-compose.yml was not validated"
      return 0
    fi
    log "installing docker-compose to validate docker-compose.yml"
    local install_log
    install_log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends docker-compose; } >"$install_log" 2>&1; then
      tail -n 5 "$install_log" >&2
      rm -f "$install_log"
      log "WARNING: could not install docker-compose: docker-compose.yml was not validated"
      return 0
    fi
    rm -f "$install_log"
  fi
  log "validating docker-compose.yml"
  if ! docker-compose -f docker-compose.yml config -q; then
    log "docker-compose.yml is invalid"
    return 1
  fi
}

ensure_rabbitmq
ensure_postgres
ensure_kafka
ensure_schemathesis
ensure_chromium

validate_compose

log "building"
cargo build --workspace --all-targets --locked

log "running the test suite"
cargo test --workspace --locked --no-fail-fast 2>&1
