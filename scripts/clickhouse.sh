#!/usr/bin/env bash
# A local ClickHouse server for tests, benchmarks and `decnet-stream dev`:
# Debian's clickhouse-server (18.16 here), on loopback only, with its config
# and data under a project folder.
#
#   scripts/clickhouse.sh install          install clickhouse-server/-client when missing (ensure-deps.sh)
#   scripts/clickhouse.sh start            start (if not answering) and wait until it answers
#   scripts/clickhouse.sh stop             stop the server this folder started
#   scripts/clickhouse.sh status           exit 0 when it answers
#
# Environment: CLICKHOUSE_DIR (default ./var/clickhouse), CLICKHOUSE_TCP_PORT
# (default 9000), CLICKHOUSE_HTTP_PORT (default 8123).
set -euo pipefail

dir=$(realpath -m "${CLICKHOUSE_DIR:-./var/clickhouse}")
tcp_port=${CLICKHOUSE_TCP_PORT:-9000}
http_port=${CLICKHOUSE_HTTP_PORT:-8123}
server_bin=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)

install() {
  if [ -x "$server_bin" ] && command -v clickhouse-client >/dev/null 2>&1; then
    return 0
  fi
  bash "$(dirname "$0")/ensure-deps.sh"
  server_bin=$(command -v clickhouse-server || echo /usr/sbin/clickhouse-server)
}

answers() {
  clickhouse-client --host 127.0.0.1 --port "$tcp_port" --query "SELECT 1" >/dev/null 2>&1
}

write_config() {
  mkdir -p "$dir/data" "$dir/tmp" "$dir/log" "$dir/user_files" "$dir/format_schemas"
  cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>$dir/log/server.log</log>
        <errorlog>$dir/log/server.err.log</errorlog>
        <size>100M</size>
        <count>2</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$http_port</http_port>
    <tcp_port>$tcp_port</tcp_port>
    <path>$dir/data/</path>
    <tmp_path>$dir/tmp/</tmp_path>
    <user_files_path>$dir/user_files/</user_files_path>
    <format_schema_path>$dir/format_schemas/</format_schema_path>
    <users_config>$dir/users.xml</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>100</max_concurrent_queries>
</yandex>
XML
  cat > "$dir/users.xml" <<XML
<?xml version="1.0"?>
<yandex>
    <profiles><default><max_memory_usage>4000000000</max_memory_usage></default></profiles>
    <users>
        <default>
            <password></password>
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas><default><interval><duration>3600</duration><queries>0</queries><errors>0</errors><result_rows>0</result_rows><read_rows>0</read_rows><execution_time>0</execution_time></interval></default></quotas>
</yandex>
XML
}

start() {
  install
  if answers; then
    return 0
  fi
  write_config
  (
    cd "$dir"
    nohup "$server_bin" --config-file="$dir/config.xml" > "$dir/log/stdout.log" 2>&1 &
    echo $! > "$dir/server.pid"
  )
  for _ in $(seq 1 120); do
    if answers; then
      echo "clickhouse.sh: serving on 127.0.0.1:$tcp_port (data in $dir)" >&2
      return 0
    fi
    if ! kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
      echo "clickhouse.sh: the server exited:" >&2
      tail -20 "$dir/log/stdout.log" "$dir/log/server.err.log" >&2 2>/dev/null || true
      exit 1
    fi
    sleep 0.25
  done
  echo "clickhouse.sh: no answer on 127.0.0.1:$tcp_port after 30s" >&2
  exit 1
}

stop() {
  if [ -f "$dir/server.pid" ]; then
    pid=$(cat "$dir/server.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 80); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.25
    done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/server.pid"
  fi
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) answers ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac
