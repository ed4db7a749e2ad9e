#!/usr/bin/env bash
# tls.sh DIR: a private CA and a server certificate for 127.0.0.1/localhost under DIR (once), as
# the secure listeners of the local services need them:
#   ca.pem            the CA clients trust (ssl.ca.location, CLICKHOUSE_CA_FILE, SCHEMA_REGISTRY_CA_FILE)
#   server.pem/.key   ClickHouse's https_port and the registry's TLS proxy
#   server.p12        Kafka's SASL_SSL listener (PKCS12, password $FS_TLS_STORE_PASSWORD)
#   other-ca.pem      an unrelated CA: what a client with the wrong CA file holds (tests)
set -euo pipefail
dir=$1
pass="${FS_TLS_STORE_PASSWORD:-fraudstream-local}"
[ -f "$dir/.complete" ] && exit 0
mkdir -p "$dir" && cd "$dir"
quiet() { "$@" >/dev/null 2>&1 || { echo "[tls] failed: $*" >&2; "$@"; exit 1; }; }
quiet openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=fraudstream local CA" \
  -keyout ca.key -out ca.pem -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
quiet openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout server.key -out server.csr
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >server.ext
quiet openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
  -extfile server.ext -out server.pem
quiet openssl pkcs12 -export -in server.pem -inkey server.key -certfile ca.pem -name server \
  -passout "pass:$pass" -out server.p12
quiet openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=some other CA" \
  -keyout other-ca.key -out other-ca.pem
chmod 600 ./*.key server.p12
touch .complete
