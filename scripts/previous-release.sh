# The previous release's binary, for the rolling-upgrade test (tests/upgrade.rs): built once per
# release from the commit in deploy/previous-release, in a target directory of its own so that it
# never replaces this release's binary. Sourced by ./test after scripts/common.sh.

# Sets PREVIOUS_RELEASE_BIN, or PREVIOUS_RELEASE_MISSING (why) when this clone lacks the commit.
ensure_previous_release() {
  local wanted commit dir
  wanted="$(grep -v '^#' "$ROOT/deploy/previous-release" | tr -d '[:space:]')"
  commit="$(git -C "$ROOT" rev-parse --verify --quiet "$wanted^{commit}" || true)"
  if [ -z "$commit" ]; then
    # A shallow clone: fetch the one commit if there is a remote to fetch it from.
    if ! git -C "$ROOT" fetch --quiet --depth=1 origin "$wanted" 2>/dev/null; then
      PREVIOUS_RELEASE_MISSING="commit $wanted of deploy/previous-release is not in this clone"
      say "Previous release: $PREVIOUS_RELEASE_MISSING; the rolling-upgrade test will say it was skipped"
      return 0
    fi
    commit="$(git -C "$ROOT" rev-parse --verify "FETCH_HEAD^{commit}")"
  fi
  dir="$ROOT/target/previous-release/$commit"
  PREVIOUS_RELEASE_BIN="$dir/target/debug/switchboard"
  if [ -x "$PREVIOUS_RELEASE_BIN" ]; then return 0; fi
  say "Building the previous release ${commit:0:12} (once; its own target directory)"
  rm -rf "$dir/src"
  mkdir -p "$dir/src"
  git -C "$ROOT" archive "$commit" | tar -x -C "$dir/src"
  (cd "$dir/src" && CARGO_TARGET_DIR="$dir/target" cargo build --locked --quiet -p switchboard --bin switchboard)
  rm -rf "$dir/src"
}
