#!/usr/bin/env bash
# clickhouse-config.sh DIR HTTP_PORT TCP_PORT: writes a self-contained ClickHouse server config
# under DIR (data, tmp, users), listening on 127.0.0.1 only. Used by up.sh for the local service
# and by tests that need a ClickHouse of their own (e.g. to stop it mid-run).
set -euo pipefail
dir=$1 http=$2 tcp=$3
mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas"
cat >"$dir/config.xml" <<CFG
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><console>1</console></logger>
  <http_port>$http</http_port>
  <tcp_port>$tcp</tcp_port>
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
  <users><default><password></password><networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
    <profile>default</profile><quota>default</quota></default></users>
  <quotas><default></default></quotas>
</yandex>
CFG
