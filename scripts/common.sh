# Shared set-up for ./run and ./test: installs what is missing, starts what is not running.
# Idempotent: every step checks before it acts. Sourced, not executed.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
NISSHI_VERSION="0.8.1"
# The role Switchboard, its tests and the local broker use. A password makes the URL work both
# where PostgreSQL trusts local TCP and where it asks for one (Debian's default).
PG_ROLE="switchboard"
PG_PASSWORD="switchboard"
PG_HOST="127.0.0.1"
PG_PORT="5432"
PG_SERVER_URL="postgres://${PG_ROLE}:${PG_PASSWORD}@${PG_HOST}:${PG_PORT}"

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
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

# The newest installed toolchain whose rustc is at least 1.96 (nisshi's minimum).
nisshi_toolchain() {
  local tc version
  for tc in stable $(rustup toolchain list 2>/dev/null | awk '{print $1}' | grep -v '^stable' | sort -r); do
    version="$(rustc "+$tc" --version 2>/dev/null | awk '{print $2}')" || continue
    if [ -n "$version" ] && printf '1.96.0\n%s\n' "${version%%-*}" | sort -V -C; then
      echo "$tc"; return 0
    fi
  done
  return 1
}

ensure_nisshi() {
  if command -v nisshi >/dev/null && nisshi --version 2>/dev/null | grep -q "$NISSHI_VERSION"; then
    return 0
  fi
  local tc
  tc="$(nisshi_toolchain)" || die "nisshi $NISSHI_VERSION needs rustc >= 1.96: install a newer toolchain (rustup toolchain install nightly)"
  say "Installing the nisshi $NISSHI_VERSION broker with the $tc toolchain (about 11 minutes, once)"
  cargo "+$tc" install nisshi --version "$NISSHI_VERSION" --locked >&2
  export PATH="$HOME/.cargo/bin:$PATH"
  command -v nisshi >/dev/null || die "nisshi installed but not on PATH (add ~/.cargo/bin)"
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

# cargo-fuzz for the adapters' fuzz targets: it needs a nightly toolchain, which these machines
# carry for nisshi; installs cargo-fuzz once.
ensure_cargo_fuzz() {
  rustup toolchain list 2>/dev/null | grep -q '^nightly' \
    || die "the fuzz smoke run needs a nightly toolchain (rustup toolchain install nightly), or set SB_TEST_FUZZ=0"
  if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    say "Installing cargo-fuzz (about 2 minutes, once)"
    cargo +nightly install cargo-fuzz --locked >&2
  fi
}

# start_nisshi PORT STORAGE_URL STATE_DIR: starts a broker unless one already listens on PORT.
start_nisshi() {
  local port="$1" storage="$2" dir
  if port_open 127.0.0.1 "$port"; then return 0; fi
  dir="$(mkdir -p "$3" && cd "$3" && pwd)"
  say "Starting nisshi on 127.0.0.1:$port ($storage)"
  # nisshi reads a .env from its working directory; run it in its own empty state directory.
  # nohup execs in place, so $! is the broker's own pid (setsid would fork when its caller
  # leads a process group, and the pid file would name a process that is gone).
  (
    cd "$dir"
    nohup nisshi broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine "$storage" >"$dir/nisshi.log" 2>&1 </dev/null &
    echo $! >"$dir/nisshi.pid"
  )
  wait_port 127.0.0.1 "$port" 60 "nisshi (log: $dir/nisshi.log)"
}

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
