# Schemathesis, the property-based tester that tests/openapi.rs runs against docs/openapi.yaml
# and both HTTP servers (the query API and the router). Sourced by ./test after scripts/common.sh
# (say, die, timed, apt_install, ROOT); `ensure_schemathesis` installs the version pinned in
# tests/interop/openapi/requirements.txt when it is missing and exports:
#   SB_SCHEMATHESIS  the path of its `st` executable
# Idempotent: a second run with nothing changed only checks.

OPENAPI_REQUIREMENTS="$ROOT/tests/interop/openapi/requirements.txt"
# In a virtual environment outside the work tree, keyed by the pinned requirements, like the
# Kafka jars: no system pip (PEP 668), nothing shared with other projects.
SCHEMATHESIS_VENV="${SB_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}/schemathesis-$(sha256sum "$OPENAPI_REQUIREMENTS" | cut -c1-12)"

ensure_schemathesis() {
  local version st="$SCHEMATHESIS_VENV/bin/st"
  version="$(sed -n 's/^schemathesis==\([^ ;#]*\).*/\1/p' "$OPENAPI_REQUIREMENTS")"
  [ -n "$version" ] || die "$OPENAPI_REQUIREMENTS pins no schemathesis==<version>"
  if [ -f "$SCHEMATHESIS_VENV/complete" ] && "$st" --version 2>/dev/null | grep -qxF "st, version $version"; then
    export SB_SCHEMATHESIS="$st"
    return 0
  fi
  if ! command -v python3 >/dev/null; then apt_install python3; fi
  python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "schemathesis $version needs Python 3.11 or later; python3 is $(python3 --version 2>&1)"
  rm -rf "$SCHEMATHESIS_VENV"
  if ! python3 -m venv "$SCHEMATHESIS_VENV" >&2 2>/dev/null; then
    # Debian ships venv (and ensurepip) apart from python3.
    rm -rf "$SCHEMATHESIS_VENV"
    apt_install python3-venv
    python3 -m venv "$SCHEMATHESIS_VENV" >&2
  fi
  say "Installing schemathesis $version from PyPI into $SCHEMATHESIS_VENV"
  "$SCHEMATHESIS_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$OPENAPI_REQUIREMENTS" >&2
  "$st" --version 2>/dev/null | grep -qxF "st, version $version" \
    || die "schemathesis $version did not install in $SCHEMATHESIS_VENV"
  touch "$SCHEMATHESIS_VENV/complete"
  export SB_SCHEMATHESIS="$st"
}
