#!/usr/bin/env bash
# Writes the tokens and keys docker-compose.yml reads from .env (next to it), each 32 random
# bytes, base64: the services refuse placeholders and anything shorter than 32 bytes. A value
# already in .env is kept, so running it again changes nothing; delete a line to replace it.
# Prints the API token (the `Authorization: Bearer` of the call-log API, the dispatcher and the
# desk) and the PBX lookup token.
set -euo pipefail
env_file="$(cd "$(dirname "$0")/.." && pwd)/.env"
touch "$env_file"
chmod 600 "$env_file"
for name in SB_API_TOKEN SB_LOOKUP_TOKEN SB_LINK_KEY SB_SECRETS_KEY SB_DESK_TOKEN_KEY SB_SOURCES_KEY; do
  if ! grep -q "^$name=" "$env_file"; then
    # 36 bytes make 48 base64 characters; without '/', '+' and '=' (kept out of URLs and JSON)
    # well over 32 remain.
    echo "$name=$(head -c 36 /dev/urandom | base64 | tr -d '/+=\n')" >>"$env_file"
  fi
done
echo "Wrote $env_file"
grep -E '^SB_(API|LOOKUP)_TOKEN=' "$env_file"
