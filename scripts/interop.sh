# Independent Avro decoders for tests/interop.rs: Apache Avro's Java implementation
# (tests/interop/java, built with Maven) and fastavro with confluent-kafka in Python
# (tests/interop/python). Sourced by ./test after scripts/common.sh (say, die, timed, apt_install,
# ensure_java, ROOT); `ensure_interop_tools` installs and builds what is missing and exports:
#   SB_INTEROP_JAVA_CP  the Java decoder's class path (main class dev.switchboard.interop.Decode)
#   SB_INTEROP_PYTHON   a Python interpreter that has the decoder's requirements
# Idempotent: a second run with nothing changed only checks.

INTEROP_DIR="$ROOT/tests/interop"
# The Python packages live in a virtual environment outside the work tree, keyed by the pinned
# requirements, like the Kafka jars: no system pip (PEP 668), nothing shared with other projects.
INTEROP_VENV="${SB_KAFKA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/switchboard}/interop-python-$(sha256sum "$INTEROP_DIR/python/requirements.txt" | cut -c1-12)"

ensure_interop_python() {
  local requirements="$INTEROP_DIR/python/requirements.txt"
  if [ -f "$INTEROP_VENV/complete" ] && "$INTEROP_VENV/bin/python" -c 'import confluent_kafka, fastavro' 2>/dev/null; then
    export SB_INTEROP_PYTHON="$INTEROP_VENV/bin/python"
    return 0
  fi
  if ! command -v python3 >/dev/null; then apt_install python3; fi
  rm -rf "$INTEROP_VENV"
  if ! python3 -m venv "$INTEROP_VENV" >&2 2>/dev/null; then
    # Debian ships venv (and ensurepip) apart from python3.
    rm -rf "$INTEROP_VENV"
    apt_install python3-venv
    python3 -m venv "$INTEROP_VENV" >&2
  fi
  say "Installing $(grep -v '^#' "$requirements" | tr '\n' ' ')from PyPI into $INTEROP_VENV"
  "$INTEROP_VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$requirements" >&2
  "$INTEROP_VENV/bin/python" -c 'import confluent_kafka, fastavro' \
    || die "confluent-kafka and fastavro do not import in $INTEROP_VENV"
  touch "$INTEROP_VENV/complete"
  export SB_INTEROP_PYTHON="$INTEROP_VENV/bin/python"
}

ensure_interop_java() {
  local project="$INTEROP_DIR/java" jar="$INTEROP_DIR/java/target/interop-decoder.jar"
  ensure_java
  # Rebuilt when the jar is missing, its dependencies are, or a source is newer than the jar.
  if [ ! -f "$jar" ] || [ ! -d "$project/target/lib" ] \
      || [ -n "$(find "$project/pom.xml" "$project/src" -newer "$jar" -print -quit)" ]; then
    say "Building the Java Avro decoder (Maven Central: Apache Avro, Kafka clients)"
    rm -rf "$project/target/lib"
    mvn -q -B -Dstyle.color=never -f "$project/pom.xml" package >&2 \
      || die "building $project failed"
    [ -f "$jar" ] || die "mvn package left no $jar"
    touch "$jar"
  fi
  export SB_INTEROP_JAVA_CP="$jar:$project/target/lib/*"
}

ensure_interop_tools() {
  ensure_interop_python
  ensure_interop_java
}
