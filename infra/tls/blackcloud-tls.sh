#!/usr/bin/env bash
# blackcloud TLS material, made on the operator's machine (docs/deploy.md, step 2). Needs openssl and node.
# The CA's private key never leaves the directory given here; the stack never sees any private key: the broker
# and the controller read theirs from Secrets Manager at boot, by secret name.
#
#   blackcloud-tls.sh ca       DIR                  CA key and certificate (ECDSA P-256, 10 years)
#   blackcloud-tls.sh server   DIR DNS_NAME         broker key and certificate for DNS_NAME (serverAuth, 2 years)
#   blackcloud-tls.sh client   DIR COMMON_NAME      client key and certificate, CN = device id or controller id
#   blackcloud-tls.sh secret   DIR NAME             prints the Secrets Manager JSON for NAME (broker or a client)
#
# Files: DIR/ca.key DIR/ca.crt DIR/<name>.key DIR/<name>.crt; keys are 0600, the directory 0700.
set -euo pipefail
umask 077

usage() {
  sed -n '2,12p' "$0" >&2
  exit 2
}

die() {
  echo "blackcloud-tls: $*" >&2
  exit 1
}

valid_name() {
  [[ "$1" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$ ]] || die "name '$1' must be 1..64 letters, digits, dots, dashes or underscores"
}

command -v openssl >/dev/null || die "openssl is required"

[ $# -ge 2 ] || usage
command=$1
dir=$2
mkdir -p "$dir"
chmod 0700 "$dir"

case "$command" in
  ca)
    [ ! -e "$dir/ca.key" ] || die "$dir/ca.key exists: refusing to overwrite a CA"
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/ca.key"
    openssl req -x509 -new -key "$dir/ca.key" -sha256 -days 3650 -subj "/CN=blackcloud CA" \
      -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" \
      -out "$dir/ca.crt"
    chmod 0600 "$dir/ca.key"
    chmod 0644 "$dir/ca.crt"
    echo "$dir/ca.crt"
    ;;
  server | client)
    [ $# -eq 3 ] || usage
    name=$3
    [ -f "$dir/ca.key" ] || die "no CA in $dir: run '$0 ca $dir' first"
    if [ "$command" = server ]; then
      [[ "$name" =~ ^[a-z0-9.-]+$ ]] || die "DNS name '$name' must be lower-case letters, digits, dots and dashes"
      file=broker
      subject="/CN=$name"
      extensions="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:$name"
    else
      valid_name "$name"
      file=$name
      subject="/CN=$name"
      extensions="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"
    fi
    [ ! -e "$dir/$file.key" ] || die "$dir/$file.key exists: refusing to overwrite it"
    openssl ecparam -name prime256v1 -genkey -noout -out "$dir/$file.key"
    openssl req -new -key "$dir/$file.key" -subj "$subject" -out "$dir/$file.csr"
    printf '%s\n' "$extensions" >"$dir/$file.ext"
    openssl x509 -req -in "$dir/$file.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" -CAcreateserial \
      -sha256 -days 730 -extfile "$dir/$file.ext" -out "$dir/$file.crt" 2>/dev/null
    rm -f "$dir/$file.csr" "$dir/$file.ext"
    chmod 0600 "$dir/$file.key"
    chmod 0644 "$dir/$file.crt"
    echo "$dir/$file.crt"
    ;;
  secret)
    [ $# -eq 3 ] || usage
    name=$3
    valid_name "$name"
    [ -f "$dir/$name.key" ] && [ -f "$dir/$name.crt" ] || die "no $name.key/$name.crt in $dir"
    command -v node >/dev/null || die "node is required"
    node -e '
      const fs = require("node:fs");
      const [dir, name] = process.argv.slice(1);
      const read = (file) => fs.readFileSync(`${dir}/${file}`, "utf8");
      process.stdout.write(JSON.stringify({
        caCertificate: read("ca.crt"),
        certificate: read(`${name}.crt`),
        privateKey: read(`${name}.key`),
      }));
    ' "$dir" "$name"
    ;;
  *)
    usage
    ;;
esac
