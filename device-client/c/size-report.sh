#!/usr/bin/env bash
# Flash and stack figures of the C device library on a Cortex-M4 (docs/device-sdk.md, "Size and memory").
#
#   device-client/c/size-report.sh                        the library alone (crypto excluded)
#   MBEDTLS_SRC=DIR device-client/c/size-report.sh        also mbedTLS's ChaCha20-Poly1305, SHA-256 and HMAC, built
#                                                         from DIR (an mbedTLS 2.28/3.x source tree, e.g. Debian's:
#                                                         `apt-get source mbedtls`) with the minimal config below
#
# Needs Debian's gcc-arm-none-eabi. Compiles with `arm-none-eabi-gcc -std=c99 -Os -mcpu=cortex-m4 -mthumb
# -ffunction-sections -fdata-sections -fstack-usage -fcallgraph-info=su`, then for each function group links the
# objects with `-nostdlib --gc-sections`, rooted at the group's public functions, against newlib-nano and libgcc
# (the memcpy and division helpers the compiler may call). Flash = .text + .rodata of that link; "own" leaves out
# the newlib/libgcc helpers, listed separately (a firmware has them anyway). Stack = the worst path through the
# call graph (.ci files) of per-function frames (.su files, all "static", i.e. fixed); an indirect call (the
# crypto backend) costs the backend function's worst path when MBEDTLS_SRC is given, else 0; newlib/libgcc leaves
# (memcpy) count 0. No recursion exists in the library (the script fails if it finds a cycle).
#
# Output: markdown tables, and one `figure NAME VALUE` line per number for tools (test/device-client/c-size.test.ts).
# Exit codes: 0 ok; 1 a tool is missing or a build failed.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
CC=arm-none-eabi-gcc
SIZE=arm-none-eabi-size
NM=arm-none-eabi-nm
for tool in "$CC" "$SIZE" "$NM"; do
  command -v "$tool" >/dev/null || { echo "size-report: $tool is missing: apt-get install gcc-arm-none-eabi" >&2; exit 1; }
done

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
ARCH=(-mcpu=cortex-m4 -mthumb)
CFLAGS=(-std=c99 -Os "${ARCH[@]}" -ffunction-sections -fdata-sections -fstack-usage -fcallgraph-info=su
  -Wall -Wextra -Werror "-I$HERE/include")

compile() { # compile SOURCE OBJECT [extra flags...]
  local src="$1" obj="$2"
  shift 2
  (cd "$WORK" && "$CC" "${CFLAGS[@]}" "$@" -c "$src" -o "$obj") || { echo "size-report: cannot compile $src" >&2; exit 1; }
}

LIB_OBJECTS=("$WORK/bc1.o" "$WORK/key_offer.o" "$WORK/key_messages.o" "$WORK/connect_credential.o")
compile "$HERE/src/bc1.c" bc1.o
compile "$HERE/src/key_offer.c" key_offer.o
compile "$HERE/src/key_messages.c" key_messages.o
compile "$HERE/src/connect_credential.c" connect_credential.o

CRYPTO_OBJECTS=()
if [ -n "${MBEDTLS_SRC:-}" ]; then
  [ -f "$MBEDTLS_SRC/library/chachapoly.c" ] || { echo "size-report: $MBEDTLS_SRC is not an mbedTLS source tree" >&2; exit 1; }
  # The smallest configuration the backend needs (the options the porting note lists).
  cat >"$WORK/bc_mbedtls_config.h" <<'EOF'
#define MBEDTLS_CHACHA20_C
#define MBEDTLS_POLY1305_C
#define MBEDTLS_CHACHAPOLY_C
#define MBEDTLS_SHA256_C
#define MBEDTLS_MD_C
#define MBEDTLS_SHA256_SMALLER
EOF
  MBED_FLAGS=("-I$MBEDTLS_SRC/include" "-I$WORK" '-DMBEDTLS_CONFIG_FILE="bc_mbedtls_config.h"')
  compile "$HERE/src/backend_mbedtls.c" backend_mbedtls.o "${MBED_FLAGS[@]}"
  for unit in chacha20 poly1305 chachapoly sha256 md platform_util; do
    compile "$MBEDTLS_SRC/library/$unit.c" "mbedtls_$unit.o" "${MBED_FLAGS[@]}" -Wno-unused-parameter
    CRYPTO_OBJECTS+=("$WORK/mbedtls_$unit.o")
  done
  CRYPTO_OBJECTS=("$WORK/backend_mbedtls.o" "${CRYPTO_OBJECTS[@]}")
else
  # The backend glue needs mbedTLS headers only: Debian's libmbedtls-dev, seen through a directory that holds
  # nothing but them (the host's other headers must not shadow newlib's).
  if [ -d /usr/include/mbedtls ]; then
    mkdir -p "$WORK/mbedtls-headers" && ln -s /usr/include/mbedtls "$WORK/mbedtls-headers/mbedtls"
    compile "$HERE/src/backend_mbedtls.c" backend_mbedtls.o "-I$WORK/mbedtls-headers"
  fi
fi

# Symbols defined by our own objects (library + crypto): everything else in a link is a newlib/libgcc helper.
"$NM" --defined-only "${LIB_OBJECTS[@]}" "${CRYPTO_OBJECTS[@]}" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u >"$WORK/own-symbols"

# link NAME OBJECTS... -- ROOTS...: prints "TOTAL HELPERS" (.text+.rodata of the link, and the helpers' part).
link() {
  local name="$1"
  shift
  local objects=() roots=()
  while [ "$1" != "--" ]; do objects+=("$1"); shift; done
  shift
  roots=("$@")
  local flags=(-Wl,-e,"${roots[0]}")
  for root in "${roots[@]}"; do flags+=(-Wl,--undefined="$root"); done
  "$CC" "${ARCH[@]}" --specs=nano.specs -nostdlib -Wl,--gc-sections "${flags[@]}" ${LINK_EXTRA:-} "${objects[@]}" -lc -lgcc \
    -o "$WORK/$name.elf" || { echo "size-report: cannot link $name" >&2; exit 1; }
  local total helpers
  total=$("$SIZE" -A "$WORK/$name.elf" | awk '$1 == ".text" || $1 == ".rodata" { s += $2 } END { print s + 0 }')
  helpers=$("$NM" -S -t d --defined-only "$WORK/$name.elf" | awk -v own="$WORK/own-symbols" '
    BEGIN { while ((getline line < own) > 0) mine[line] = 1 }
    NF == 4 && ($3 ~ /^[TtRr]$/) && !($4 in mine) { s += $2 + 0 }
    END { print s + 0 }')
  echo "$total $helpers"
}

PUBLIC=(bc_knock_build bc_knock_length bc_key_offer_open bc_ack_proof bc_key_ack_build bc_connect_credential)
declare -A GROUP_ROOTS=(
  [knock]="bc_knock_build bc_knock_length"
  [offer]="bc_key_offer_open"
  [ack]="bc_key_ack_build bc_ack_proof"
  [credential]="bc_connect_credential"
  [total]="${PUBLIC[*]}"
)
declare -A GROUP_WHAT=(
  [knock]='the knock: `bc_knock_build`, `bc_knock_length`'
  [offer]='open a sealed key offer: `bc_key_offer_open` (BKO1; the AEAD is the backend'"'"'s)'
  [ack]='the ack and its proof: `bc_key_ack_build`, `bc_ack_proof`'
  [credential]='the plain profile'"'"'s connect credential: `bc_connect_credential` (the HMAC is the backend'"'"'s)'
  [total]='the whole library'
)

echo "## Flash, Cortex-M4 (arm-none-eabi-gcc $("$CC" -dumpversion), -Os -mthumb), bytes of .text + .rodata"
echo
echo "| group | own code | + newlib/libgcc helpers | what |"
echo "| --- | ---: | ---: | --- |"
for group in knock offer ack credential total; do
  read -r total helpers < <(link "$group" "${LIB_OBJECTS[@]}" -- ${GROUP_ROOTS[$group]})
  own=$((total - helpers))
  echo "| $group | $own | $helpers | ${GROUP_WHAT[$group]} |"
  FIGURES+=("flash.$group $own" "flash.$group.helpers $helpers")
done
data_bss=$("$SIZE" -A "$WORK/total.elf" | awk '$1 == ".data" || $1 == ".bss" { s += $2 } END { print s + 0 }')
FIGURES+=("ram.static $data_bss")
echo
echo ".data + .bss of the whole library: $data_bss bytes. Heap: none (the objects reference no allocator: $(
  "$NM" -u "${LIB_OBJECTS[@]}" | awk 'NF == 2 { print $2 }' | sort -u | tr '\n' ' ')are all they need)."
if [ -f "$WORK/backend_mbedtls.o" ]; then
  glue=$("$SIZE" -A "$WORK/backend_mbedtls.o" | awk '$1 ~ /^\.text|^\.rodata/ { s += $2 } END { print s + 0 }')
  echo "The mbedTLS backend glue (src/backend_mbedtls.c): $glue bytes, not counted above."
  FIGURES+=("flash.backend $glue")
fi

if [ ${#CRYPTO_OBJECTS[@]} -gt 0 ]; then
  echo
  echo "## mbedTLS $(awk '/#define MBEDTLS_VERSION_STRING /{ gsub(/"/, "", $3); print $3 }' "$MBEDTLS_SRC/include/mbedtls/version.h") (minimal config), same flags"
  echo
  echo "| object | .text + .rodata (whole object) |"
  echo "| --- | ---: |"
  for obj in "${CRYPTO_OBJECTS[@]}"; do
    n=$("$SIZE" -A "$obj" | awk '$1 ~ /^\.text|^\.rodata/ { s += $2 } END { print s + 0 }')
    echo "| $(basename "$obj" .o) | $n |"
    FIGURES+=("flash.crypto.$(basename "$obj" .o) $n")
  done
  needs=$("$NM" -u "${CRYPTO_OBJECTS[@]}" | awk 'NF == 2 { print $2 }' | sort -u | comm -23 - "$WORK/own-symbols" | tr '\n' ' ')
  echo
  echo "What these objects need from the C library: ${needs}"
  if printf '%s' "$needs" | grep -qw calloc; then
    echo "(calloc/free: mbedtls_md_setup allocates the HMAC context on the heap, about 240 bytes per"
    echo "bc_ack_proof call, freed before it returns; the knock's ChaCha20-Poly1305 path allocates nothing. The links below"
    echo "resolve newlib's sbrk to 0 to complete; newlib-nano's malloc is then part of the helpers.)"
    FIGURES+=("heap.mbedtls_md 1")
  fi
  export LINK_EXTRA=-Wl,--defsym=_sbrk=0
  read -r total helpers < <(link knock-crypto "${LIB_OBJECTS[@]}" "${CRYPTO_OBJECTS[@]}" -- bc_knock_build bc_crypto_mbedtls)
  echo
  echo "Linked, knock + backend + the mbedTLS it reaches (ChaCha20-Poly1305 and, through the backend struct, HMAC): $((total - helpers)) bytes (+ $helpers of helpers)."
  FIGURES+=("flash.knock+crypto $((total - helpers))")
  read -r total helpers < <(link all-crypto "${LIB_OBJECTS[@]}" "${CRYPTO_OBJECTS[@]}" -- "${PUBLIC[@]}" bc_crypto_mbedtls)
  echo "Linked, the whole library + backend + mbedTLS: $((total - helpers)) bytes (+ $helpers of helpers)."
  FIGURES+=("flash.total+crypto $((total - helpers))")
fi

# ---- stack: worst path over the call graph ----
cat "$WORK"/*.ci >"$WORK/all.ci"
# worst FUNCTION INDIRECT_COST: the function's frame plus its deepest callee (the indirect call costs INDIRECT_COST).
worst() {
  awk -v root="$1" -v indirect="$2" '
    /^node:/ {
      match($0, /title: "[^"]*"/); name = substr($0, RSTART + 8, RLENGTH - 9)
      if (match($0, /\\n[0-9]+ bytes \(/)) { frame[name] = substr($0, RSTART + 2, RLENGTH - 10) + 0; seen[name] = 1 }
      if (match($0, /\(dynamic/)) { dynamic[name] = 1 }
    }
    /^edge:/ {
      match($0, /sourcename: "[^"]*"/); from = substr($0, RSTART + 13, RLENGTH - 14)
      match($0, /targetname: "[^"]*"/); to = substr($0, RSTART + 13, RLENGTH - 14)
      if (!((from SUBSEP to) in has)) { has[from, to] = 1; callees[from] = callees[from] " " to }
    }
    function depth(f, stackdepth,   n, i, list, best, d) {
      if (f == "__indirect_call") return indirect
      if (!(f in seen)) return 0               # a newlib/libgcc leaf (memcpy): not measured
      if (f in active) { print "size-report: recursion through " f > "/dev/stderr"; exit 1 }
      if (f in dynamic) { print "size-report: dynamic stack in " f > "/dev/stderr"; exit 1 }
      if (f in memo) return memo[f]
      active[f] = 1
      best = 0
      n = split(callees[f], list, " ")
      for (i = 1; i <= n; i++) { d = depth(list[i]); if (d > best) best = d }
      delete active[f]
      memo[f] = frame[f] + best
      return memo[f]
    }
    END {
      if (!(root in seen)) for (n in seen) if (substr(n, length(n) - length(root)) == ":" root) root = n  # a static
      if (!(root in seen)) { print "size-report: no frame for " root > "/dev/stderr"; exit 1 }
      print depth(root)
    }
  ' "$WORK/all.ci"
}

SEAL=0
OPEN=0
HMAC=0
if [ ${#CRYPTO_OBJECTS[@]} -gt 0 ]; then
  SEAL=$(worst mbedtls_seal 0)
  OPEN=$(worst mbedtls_open 0)
  HMAC=$(worst mbedtls_hmac 0)
fi
echo
echo "## Worst-case stack per public call, bytes (frames from -fstack-usage, paths from -fcallgraph-info)"
echo
if [ ${#CRYPTO_OBJECTS[@]} -gt 0 ]; then
  echo "| call | library only | with the mbedTLS backend |"
  echo "| --- | ---: | ---: |"
else
  echo "| call | library only |"
  echo "| --- | ---: |"
fi
for fn in "${PUBLIC[@]}"; do
  case "$fn" in
    bc_knock_build) backend=$SEAL ;;
    bc_key_offer_open) backend=$OPEN ;;
    bc_ack_proof | bc_key_ack_build | bc_connect_credential) backend=$HMAC ;;
    *) backend=0 ;;
  esac
  alone=$(worst "$fn" 0)
  FIGURES+=("stack.$fn $alone")
  if [ ${#CRYPTO_OBJECTS[@]} -gt 0 ]; then
    with=$(worst "$fn" "$backend")
    echo "| \`$fn\` | $alone | $with |"
    FIGURES+=("stack.$fn+crypto $with")
  else
    echo "| \`$fn\` | $alone |"
  fi
done
if [ ${#CRYPTO_OBJECTS[@]} -gt 0 ]; then
  echo
  echo "Backend worst paths: mbedtls_seal $SEAL, mbedtls_open $OPEN, mbedtls_hmac $HMAC."
fi

echo
for figure in "${FIGURES[@]}"; do echo "figure $figure"; done
