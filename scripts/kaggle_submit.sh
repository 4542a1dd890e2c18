#!/usr/bin/env bash
# Submit to a Kaggle competition with the official `kaggle` CLI and your own credentials.
#
#   scripts/kaggle_submit.sh submission.csv "minilm fold0, tta"                  # file submission
#   scripts/kaggle_submit.sh submission.csv "msg" --check test.csv               # validate first (src.predict --check)
#   scripts/kaggle_submit.sh submission.csv "msg" --kernel me/lmsys-infer --version 3   # code competition
#
# LMSYS Chatbot Arena is a code competition: Kaggle scores the submission.csv a
# notebook version writes (see notebooks/kaggle_inference.ipynb), so pass
# --kernel/--version there; -f then names that notebook's output file.
#
# Options: --competition SLUG (default $KAGGLE_COMPETITION or lmsys-chatbot-arena),
#          --check TEST_CSV, --kernel USER/SLUG, --version N, --dry-run (print the command, don't submit).
# Needs: pip install kaggle six   (the current kaggle release needs six alongside it)
# Credentials, any one of: KAGGLE_API_TOKEN; KAGGLE_USERNAME + KAGGLE_KEY; ~/.kaggle/access_token;
#   ${KAGGLE_CONFIG_DIR:-~/.kaggle}/kaggle.json; `kaggle auth login` (~/.kaggle/credentials.json).
# This script never prints them (no `set -x`, no echo of the environment).
set -euo pipefail

die() { echo "error: $1" >&2; exit "${2:-2}"; }
usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; }

[[ $# -ge 1 && ( "$1" == "-h" || "$1" == "--help" ) ]] && { usage; exit 0; }
[[ $# -ge 2 ]] || { usage >&2; die "need a file and a message"; }
file=$1 message=$2
shift 2
competition=${KAGGLE_COMPETITION:-lmsys-chatbot-arena}
check="" kernel="" version="" dry_run=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --competition) competition=${2:?--competition needs a slug}; shift 2 ;;
    --check) check=${2:?--check needs the test CSV}; shift 2 ;;
    --kernel) kernel=${2:?--kernel needs USER/SLUG}; shift 2 ;;
    --version) version=${2:?--version needs a number}; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[[ -n "$message" ]] || die "the message is empty"
if [[ -z "$kernel" ]]; then
  [[ -f "$file" ]] || die "$file: no such file"
  [[ -s "$file" ]] || die "$file: file is empty"
fi
[[ -z "$version" || -n "$kernel" ]] || die "--version needs --kernel"

kaggle_bin=${KAGGLE_BIN:-kaggle}
command -v "$kaggle_bin" >/dev/null 2>&1 || die "the kaggle CLI is not installed: pip install kaggle six"
if ! version_out=$("$kaggle_bin" --version 2>&1); then
  if grep -q "No module named 'six'" <<<"$version_out"; then
    die "the kaggle CLI needs the six package alongside it: pip install six"
  fi
  die "the kaggle CLI does not run: $(tail -n 1 <<<"$version_out")"
fi

have_credentials() {
  local dir=${KAGGLE_CONFIG_DIR:-$HOME/.kaggle}
  [[ -n "${KAGGLE_API_TOKEN:-}" ]] && return 0
  [[ -n "${KAGGLE_USERNAME:-}" && -n "${KAGGLE_KEY:-}" ]] && return 0
  [[ -s "$dir/kaggle.json" || -s "$HOME/.kaggle/access_token" || -s "$HOME/.kaggle/access_token.txt" \
     || -s "$HOME/.kaggle/credentials.json" ]] && return 0
  return 1
}
if ! have_credentials; then
  die "no Kaggle credentials found. Create an API token at https://www.kaggle.com/settings/api and either
  export KAGGLE_API_TOKEN=...            (or KAGGLE_USERNAME=... and KAGGLE_KEY=...)
  or save it as ~/.kaggle/access_token    (or the legacy kaggle.json in \${KAGGLE_CONFIG_DIR:-~/.kaggle}, chmod 600)
  or run: kaggle auth login" 3
fi
json=${KAGGLE_CONFIG_DIR:-$HOME/.kaggle}/kaggle.json
if [[ -f "$json" ]] && [[ -n "$(find "$json" -perm /077 2>/dev/null)" ]]; then
  echo "warning: $json is readable by other users: chmod 600 $json" >&2
fi

if [[ -n "$check" ]]; then
  root=$(cd "$(dirname "$0")/.." && pwd)
  (cd "$root" && python -m src.predict --check "$(realpath "$file")" --data "$(realpath "$check")") \
    || die "$file fails the check against $check: not submitted" 4
fi

cmd=("$kaggle_bin" competitions submit "$competition" -f "$file" -m "$message")
[[ -n "$kernel" ]] && cmd+=(-k "$kernel")
[[ -n "$version" ]] && cmd+=(-v "$version")
if (( dry_run )); then
  printf '%q ' "${cmd[@]}"; echo
  exit 0
fi
echo "submitting $file to $competition${kernel:+ (notebook $kernel${version:+ v$version})}: $message"
"${cmd[@]}" || die "kaggle competitions submit failed (see above)" 5
echo "done: see https://www.kaggle.com/competitions/$competition/submissions"
