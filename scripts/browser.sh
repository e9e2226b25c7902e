# A real browser for the desk service's end-to-end test: Debian's Chromium, driven by
# playwright-core (pinned in tests/browser/package-lock.json) from tests/browser/desk.cjs.
# Sourced by ./test after scripts/common.sh (say, die, apt_install, ROOT); `ensure_browser_tools`
# installs what is missing and exports:
#   SB_CHROMIUM    the Chromium executable (/usr/bin/chromium, Debian's package)
#   SB_PLAYWRIGHT  the installed playwright-core package directory, for require()
# Idempotent: a second run with nothing changed only checks, and prints nothing.

BROWSER_DIR="$ROOT/tests/browser"
# The npm packages live outside the work tree, keyed by the lock file, like the Python virtual
# environments: no node_modules in the repository, nothing shared with other projects.
BROWSER_NODE_DIR="${SB_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}/browser-$(sha256sum "$BROWSER_DIR/package-lock.json" | cut -c1-12)"
BROWSER_CHROMIUM=/usr/bin/chromium

# Only Debian's Chromium is used: no tool may fetch a browser build of its own (this machine's
# network reaches package registries only, and the test must run the same browser everywhere).
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1

ensure_browser_tools() {
  local missing=()
  [ -x "$BROWSER_CHROMIUM" ] || missing+=(chromium)
  command -v node >/dev/null || missing+=(nodejs)
  command -v npm >/dev/null || missing+=(npm)
  if [ ${#missing[@]} -gt 0 ]; then
    say "Installing ${missing[*]} from Debian"
    apt_install "${missing[@]}"
  fi
  [ -x "$BROWSER_CHROMIUM" ] || die "the chromium package did not install $BROWSER_CHROMIUM"
  local node_major
  node_major="$(node -p 'process.versions.node.split(".")[0]')"
  # playwright-core asks for Node.js 20 or later (and desk.cjs uses its fetch).
  [ "$node_major" -ge 20 ] || die "tests/browser needs Node.js 20 or later; node is $(node --version)"

  local playwright="$BROWSER_NODE_DIR/node_modules/playwright-core"
  if [ ! -f "$BROWSER_NODE_DIR/complete" ] || [ ! -f "$playwright/package.json" ]; then
    local version
    version="$(node -p 'require(process.argv[1]).dependencies["playwright-core"]' "$BROWSER_DIR/package.json")"
    say "Installing playwright-core $version from npm into $BROWSER_NODE_DIR"
    rm -rf "$BROWSER_NODE_DIR"
    mkdir -p "$BROWSER_NODE_DIR"
    cp "$BROWSER_DIR/package.json" "$BROWSER_DIR/package-lock.json" "$BROWSER_NODE_DIR/"
    # npm ci installs exactly the lock; --ignore-scripts: no install script runs (none is needed,
    # and none gets to download a browser).
    (cd "$BROWSER_NODE_DIR" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) >/dev/null \
      || die "npm ci in $BROWSER_NODE_DIR failed"
    [ -f "$playwright/package.json" ] || die "npm ci left no $playwright"
    touch "$BROWSER_NODE_DIR/complete"
  fi
  export SB_CHROMIUM="$BROWSER_CHROMIUM"
  export SB_PLAYWRIGHT="$playwright"
}
