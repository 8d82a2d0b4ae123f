#!/usr/bin/env bash
# Start the local services the tests use when they are not running (the machine
# image has them installed; see ../.library/env). Idempotent.
set -u
up() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
start() { # port name command...
    local port=$1 name=$2; shift 2
    if up "$port"; then return 0; fi
    echo "starting $name" >&2
    "$@" >/dev/null 2>&1 || echo "could not start $name" >&2
    for _ in $(seq 1 30); do up "$port" && return 0; sleep 1; done
    echo "$name did not come up on $port" >&2
}
if command -v redis-server >/dev/null; then
    start 6379 redis redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /tmp --logfile /tmp/redis-ci.log
fi
if command -v pg_ctlcluster >/dev/null; then
    start 5432 postgresql pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
exit 0
