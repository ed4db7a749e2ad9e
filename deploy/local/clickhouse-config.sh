#!/usr/bin/env bash
# clickhouse-config.sh DIR HTTP_PORT TCP_PORT [HTTPS_PORT TLS_DIR]: writes a self-contained
# ClickHouse server config under DIR (data, tmp, users), listening on 127.0.0.1 only, with an
# https port when HTTPS_PORT and TLS_DIR (tls.sh's) are given. Used by up.sh for the local service
# and by tests that need a ClickHouse of their own (e.g. to stop it mid-run).
set -euo pipefail
dir=$1 http=$2 tcp=$3 https=${4:-} tls=${5:-}
SECURE_USER="${FS_SECURE_USER:-fs_secure}" SECURE_PASSWORD="${FS_SECURE_PASSWORD:-fsLocalSecret7f3a}"
https_config=""
if [ -n "$https" ]; then
  https_config="<https_port>$https</https_port>
  <openSSL><server>
    <certificateFile>$tls/server.pem</certificateFile><privateKeyFile>$tls/server.key</privateKeyFile>
    <verificationMode>none</verificationMode><loadDefaultCAFile>false</loadDefaultCAFile>
    <cacheSessions>true</cacheSessions><disableProtocols>sslv2,sslv3</disableProtocols>
    <preferServerCiphers>true</preferServerCiphers>
  </server></openSSL>"
fi
CH_USER="${FS_CLICKHOUSE_USER:-fraudstream}" CH_PASSWORD="${FS_CLICKHOUSE_PASSWORD:-fraudstream}"
mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
cat >"$dir/config.xml" <<CFG
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
  $https_config
  <listen_host>127.0.0.1</listen_host>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>200</max_concurrent_queries>
</yandex>
CFG
cat >"$dir/users.xml" <<CFG
<?xml version="1.0"?>
<yandex>
  <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
  <users>
    <default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile><quota>default</quota></default>
    <!-- A password-protected user, as real deployments have: the compose stack's default
         credentials (docker-compose.yml), so its services run natively against this server. -->
    <$CH_USER><password_sha256_hex>$(printf %s "$CH_PASSWORD" | sha256sum | cut -d' ' -f1)</password_sha256_hex>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile><quota>default</quota></$CH_USER>
    <!-- The secure listeners' user (env.sh), for the tests over https with a password. -->
    <$SECURE_USER><password_sha256_hex>$(printf %s "$SECURE_PASSWORD" | sha256sum | cut -d' ' -f1)</password_sha256_hex>
      <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
      <profile>default</profile><quota>default</quota></$SECURE_USER>
  </users>
  <quotas><default></default></quotas>
</yandex>
CFG
