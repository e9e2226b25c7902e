# Shared set-up for ./run and ./test: installs what is missing, starts what is not running.
# Idempotent: every step checks before it acts. Sourced, not executed.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The role Switchboard and its tests use. A password makes the URL work both
# where PostgreSQL trusts local TCP and where it asks for one (Debian's default).
PG_ROLE="switchboard"
PG_PASSWORD="switchboard"
PG_HOST="127.0.0.1"
PG_PORT="5432"
PG_SERVER_URL="postgres://${PG_ROLE}:${PG_PASSWORD}@${PG_HOST}:${PG_PORT}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

# timed WHAT command...: runs one set-up step and prints how long it took.
timed() {
  local what="$1" start=$SECONDS; shift
  say "$what"
  "$@" >&2
  printf '    %s: %d s\n' "$what" $((SECONDS - start)) >&2
}
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to run: $*"; fi
}

apt_updated=""
apt_install() {
  command -v apt-get >/dev/null || die "apt-get not found; install these by hand: $*"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq >&2; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() { # host port seconds what
  local i
  for ((i = 0; i < $3 * 10; i++)); do port_open "$1" "$2" && return 0; sleep 0.1; done
  die "$4 did not open $1:$2 within $3 s"
}

ensure_build_tools() {
  command -v cargo >/dev/null || die "cargo not found: install Rust (https://rustup.rs) first"
  local missing=()
  command -v cc >/dev/null || missing+=(build-essential)
  command -v make >/dev/null || missing+=(make)
  command -v pkg-config >/dev/null || missing+=(pkg-config)
  command -v psql >/dev/null || missing+=(postgresql-client)
  command -v curl >/dev/null || missing+=(curl)
  [ -e /usr/include/zlib.h ] || missing+=(zlib1g-dev)
  if [ ${#missing[@]} -gt 0 ]; then say "Installing ${missing[*]}"; apt_install "${missing[@]}"; fi
}

# Runs SQL as a PostgreSQL superuser: over TCP where the server trusts it, else as the postgres
# OS user over the local socket.
pg_superuser() {
  # -w: never prompt for a password (Debian asks for one over TCP); fall back to the socket.
  if psql -w -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtAc "$1" 2>/dev/null; then
    return 0
  fi
  as_root runuser -u postgres -- psql -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -qtAc "$1"
}

ensure_postgres() {
  if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT" 2>/dev/null; then
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
      say "Installing PostgreSQL"
      apt_install postgresql
    fi
    say "Starting PostgreSQL"
    local version
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start >&2 || true
    local i
    for ((i = 0; i < 100; i++)); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 0.2; done
    pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || die "PostgreSQL did not start on $PG_HOST:$PG_PORT"
  fi
  # Log in as the role first: when it exists no superuser (and no sudo) is needed.
  if PGPASSWORD=$PG_PASSWORD psql -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ROLE" -d postgres -qtAc "SELECT 1" >/dev/null 2>&1; then
    return 0
  fi
  if [ "$(pg_superuser "SELECT 1 FROM pg_roles WHERE rolname = '$PG_ROLE'")" != 1 ]; then
    say "Creating PostgreSQL role $PG_ROLE"
    pg_superuser "CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" >/dev/null
  fi
}

ensure_database() { # name
  if [ "$(PGPASSWORD=$PG_PASSWORD psql -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ROLE" -d postgres -qtAc \
        "SELECT 1 FROM pg_database WHERE datname = '$1'")" != 1 ]; then
    PGPASSWORD=$PG_PASSWORD psql -w -h "$PG_HOST" -p "$PG_PORT" -U "$PG_ROLE" -d postgres -qc "CREATE DATABASE \"$1\"" >&2
  fi
}

# promtool and prometheus, for the monitoring tests (tests/deploy.rs checks the configs and rules,
# tests/operations.rs runs a Prometheus of its own on a free port): Debian's package, without its
# recommends (exporters the tests do not need). Where systemd runs, the package also starts a
# system Prometheus on :9090; the tests do not use it.
ensure_prometheus() {
  if command -v promtool >/dev/null && command -v prometheus >/dev/null; then return 0; fi
  command -v apt-get >/dev/null || die "apt-get not found; install Prometheus (promtool) by hand"
  say "Installing Prometheus and promtool from Debian"
  if [ -z "$apt_updated" ]; then as_root apt-get update -qq >&2; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2
  command -v promtool >/dev/null || die "the prometheus package is installed but promtool is not on PATH"
}

# cargo-fuzz for the adapters' fuzz targets. libFuzzer needs unstable compiler flags: with a
# nightly toolchain they are used as they are; on stable, RUSTC_BOOTSTRAP=1 lets stable rustc
# accept them (FUZZ_TOOLCHAIN says which the ./test step uses). Installs cargo-fuzz once.
ensure_cargo_fuzz() {
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    FUZZ_TOOLCHAIN="+nightly"
  else
    FUZZ_TOOLCHAIN="+stable"
    export RUSTC_BOOTSTRAP=1
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    timed "Installing cargo-fuzz (once)" cargo install cargo-fuzz --locked
  fi
}

# --- Apache Kafka ---------------------------------------------------------------------------
# The broker's jars come from Maven Central through deploy/kafka/pom.xml, into a cache outside
# the work tree keyed by that file's content; the broker runs from them as a plain Java process
# (KRaft, broker and controller in one), with deploy/kafka/server.properties.
KAFKA_VERSION="$(sed -n 's#.*<kafka.version>\(.*\)</kafka.version>.*#\1#p' "$ROOT/deploy/kafka/pom.xml")"
KAFKA_HOME="${SB_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}/kafka-$KAFKA_VERSION-$(sha256sum "$ROOT/deploy/kafka/pom.xml" | cut -c1-12)"

java_major() { java -version 2>&1 | sed -nE '1s/.*version "([0-9]+).*/\1/p'; }

ensure_java() {
  local missing=()
  if ! command -v java >/dev/null || [ "$(java_major)" -lt 17 ]; then missing+=(default-jre-headless); fi
  command -v mvn >/dev/null || missing+=(maven)
  if [ ${#missing[@]} -gt 0 ]; then timed "Installing ${missing[*]}" apt_install "${missing[@]}"; fi
  [ "$(java_major)" -ge 17 ] || die "Kafka $KAFKA_VERSION needs Java 17 or later; java -version says $(java_major)"
}

ensure_kafka() {
  ensure_java
  [ -f "$KAFKA_HOME/complete" ] && return 0
  rm -rf "$KAFKA_HOME"
  timed "Fetching Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_HOME" \
    mvn -q -B -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies -DoutputDirectory="$KAFKA_HOME/libs"
  touch "$KAFKA_HOME/complete"
}

kafka_java() { # main-class args...: runs one of the broker's main classes from the cached jars
  java -Xshare:auto -cp "$KAFKA_HOME/libs/*" "$@"
}

# start_kafka PORT STATE_DIR: starts a single-node broker on 127.0.0.1:PORT (controller on
# PORT+1) with its data under STATE_DIR, unless something already listens on PORT. Storage is
# formatted once, so a restart on the same directory keeps every topic and offset.
start_kafka() {
  local port="$1" controller=$(($1 + 1)) dir
  if port_open 127.0.0.1 "$port"; then return 0; fi
  port_open 127.0.0.1 "$controller" && die "port $controller (Kafka's controller listener) is taken"
  dir="$(mkdir -p "$2" && cd "$2" && pwd)"
  {
    cat "$ROOT/deploy/kafka/server.properties"
    echo "# This run's addresses and data (scripts/common.sh)."
    echo "listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller"
    echo "advertised.listeners=PLAINTEXT://127.0.0.1:$port"
    echo "controller.quorum.bootstrap.servers=127.0.0.1:$controller"
    echo "log.dirs=$dir/data"
  } >"$dir/server.properties"
  if [ ! -f "$dir/data/meta.properties" ]; then
    local cluster
    cluster="$(kafka_java kafka.tools.StorageTool random-uuid 2>>"$dir/format.log")"
    kafka_java kafka.tools.StorageTool format --standalone -t "$cluster" -c "$dir/server.properties" \
      >>"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; die "formatting Kafka's storage failed"; }
  fi
  # nohup execs in place, so $! is the JVM's own pid.
  nohup java -Xms512m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.properties" -Dkafka.logs.dir="$dir" \
    -cp "$KAFKA_HOME/libs/*" kafka.Kafka "$dir/server.properties" >"$dir/stdout.log" 2>&1 </dev/null &
  echo $! >"$dir/kafka.pid"
  # Ready means answering a metadata request on the Kafka protocol, not an open port.
  if ! kafka_java "$ROOT/deploy/kafka/Ready.java" "127.0.0.1:$port" 120 2>>"$dir/stdout.log"; then
    tail -20 "$dir/server.log" >&2 2>/dev/null || true
    die "Kafka did not become ready on 127.0.0.1:$port (logs: $dir/server.log, $dir/stdout.log)"
  fi
}

stop_kafka() { stop_pidfile "$1/kafka.pid" "kafka.Kafka"; }

stop_pidfile() { # file expected-command
  [ -f "$1" ] || return 0
  local pid; pid="$(cat "$1")"
  # Only signal the process this file was written for: a pid can be reused after a reboot.
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$2"; then
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}
