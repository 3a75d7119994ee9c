#!/usr/bin/env bash
# Keeps the boundaries ARCHITECTURE.md describes:
# - gateway/ and dispatcher/ reach the queue only through the contract
#   (proto/: the messages and the link traits), never crate::queue;
# - proto/ (the contract) depends on no component;
# - no source file outside tests/ is over 600 lines.
# Exits non-zero, naming each offence.
set -euo pipefail
cd "$(dirname "$0")/.."
fail=0
offend() { echo "check-layout: $*"; fail=1; }
# Lines of Rust code (comments left out) under $2 that match the regex $1.
code_hits() { grep -rnE "$1" "$2" --include='*.rs' | grep -vE '^[^:]+:[0-9]+:[[:space:]]*//'; }

for dir in gateway dispatcher; do
  if hits=$(code_hits '(crate|inferq)::queue\b|super::(super::)*queue\b' "$dir"); then
    offend "$dir/ uses the queue's internals (use the contract in proto/):"
    echo "$hits"
  fi
done
if hits=$(code_hits '(crate|inferq)::(queue|gateway|dispatcher|model_zoo|cli|standalone)\b' proto); then
  offend "proto/ (the contract) depends on a component:"
  echo "$hits"
fi
while read -r n f; do
  [ "$f" = total ] && continue
  [ "$n" -gt 600 ] && offend "$f has $n lines (at most 600 outside tests/)"
done < <(git ls-files -co --exclude-standard -- '*.rs' ':!tests/**' | xargs wc -l)
[ $fail -eq 0 ] && echo "check-layout: boundaries kept"
exit $fail
