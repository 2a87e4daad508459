# Sourced by run.sh with REDIS=ha: Redis run highly available on loopback, beside the
# single redis-server of REDIS=1, for the "sentinel" and "cluster" rows.
#   start_sentinels: a primary, two replicas (min-replicas-to-write 1, as the README
#     advises) and three redis-sentinel processes watching "mymaster"; sets $sentinel_list
#     (a TOML array of their host:port).
#   start_cluster: six redis-server --cluster-enabled nodes, three primaries with a replica
#     each (redis-cli --cluster create); sets $cluster_list.
# Every process in $work, stopped on exit (common.sh's cleanup), no persistence.

redis_node() { # DIR PORT EXTRA-CONFIG-LINES...: a redis-server (or, with DIR ending in
  # -sentinel, a redis-sentinel) on PORT with the given config lines.
  local dir=$1 port=$2 program=redis-server
  shift 2
  [[ $dir == *-sentinel ]] && program=redis-sentinel
  mkdir -p "$dir"
  {
    echo "port $port"
    echo "bind 127.0.0.1"
    echo "dir $dir"
    echo "logfile $dir/node.log"
    if [[ $program == redis-server ]]; then
      echo 'save ""'
      echo "appendonly no"
      echo "repl-diskless-sync-delay 0"
    fi
    printf '%s\n' "$@"
  } >"$dir/node.conf"
  "$program" "$dir/node.conf" &
  pids+=($!)
  wait_port "$port"
}

start_sentinels() {
  command -v redis-sentinel >/dev/null || {
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-sentinel >/dev/null
  }
  local primary replica1 replica2 s1 s2 s3
  read -r primary replica1 replica2 s1 s2 s3 < <(free_ports 6)
  local guard=("min-replicas-to-write 1" "min-replicas-max-lag 10")
  redis_node "$work/ha-primary" "$primary" "${guard[@]}"
  redis_node "$work/ha-replica1" "$replica1" "${guard[@]}" "replicaof 127.0.0.1 $primary"
  redis_node "$work/ha-replica2" "$replica2" "${guard[@]}" "replicaof 127.0.0.1 $primary"
  local list=()
  for port in $s1 $s2 $s3; do
    redis_node "$work/ha-$port-sentinel" "$port" \
      "sentinel monitor mymaster 127.0.0.1 $primary 2" \
      "sentinel down-after-milliseconds mymaster 1000" \
      "sentinel failover-timeout mymaster 3000"
    list+=("\"127.0.0.1:$port\"")
  done
  sentinel_list="[$(IFS=,; echo "${list[*]}")]"
  # Until both replicas replicate.
  for _ in $(seq 100); do
    [[ $(redis-cli -p "$primary" info replication | grep -c 'state=online') == 2 ]] && return
    sleep 0.1
  done
  echo "the replicas did not sync" >&2
  exit 1
}

start_cluster() {
  local ports addrs=()
  # Each node's port, then its cluster bus's (by default port + 10000: maybe taken).
  read -r -a ports < <(free_ports 12)
  for i in 0 1 2 3 4 5; do
    redis_node "$work/cluster-${ports[$i]}" "${ports[$i]}" "cluster-enabled yes" \
      "cluster-config-file nodes.conf" "cluster-node-timeout 1000" "cluster-port ${ports[$((i + 6))]}"
    addrs+=("127.0.0.1:${ports[$i]}")
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes </dev/null >/dev/null
  for _ in $(seq 100); do
    redis-cli -p "${ports[0]}" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.1
  done
  cluster_list="[$(printf '"%s",' "${addrs[@]}" | sed 's/,$//')]"
}
