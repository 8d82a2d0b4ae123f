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
# The Redis Cluster test (tests/integration/test_redis_cluster.py) starts its own nodes
# from redis-server and forms them with redis-cli; both must be installed. The Sentinel test
# (test_redis_sentinel.py) starts a master, a replica and a Sentinel from redis-server, and
# test_redis_tls.py a TLS-only redis-server (Debian's is built with TLS).
command -v redis-cli >/dev/null || echo "redis-cli is missing (Debian: redis-tools)" >&2
if command -v redis-server >/dev/null; then
    start 6379 redis redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /tmp --logfile /tmp/redis-ci.log
fi
# The messaging tests (tests/integration/test_messaging_rabbitmq.py) use RabbitMQ, guest/guest.
if command -v rabbitmq-server >/dev/null; then
    start 5672 rabbitmq rabbitmq-server -detached
fi
if command -v pg_ctlcluster >/dev/null; then
    start 5432 postgresql pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
fi
if command -v mariadbd >/dev/null || command -v mysqld >/dev/null; then
    # The machine image starts it this way (no init system); `service` is the fallback.
    if [[ -x /usr/sbin/mariadbd ]] && command -v start-stop-daemon >/dev/null; then
        start 3306 mariadb start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
    else
        start 3306 mariadb service mariadb start
    fi
    # test_database_tls.py starts its own TLS mariadbd (mariadb-install-db, a temp datadir).
    # The data-layer tests use database `test` (root, empty password, over TCP).
    if up 3306 && command -v mysql >/dev/null; then
        mysql -uroot -e "CREATE DATABASE IF NOT EXISTS test" >/dev/null 2>&1 || true
    fi
fi
if up 5432 && command -v psql >/dev/null; then
    psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" 2>/dev/null | grep -q 1 ||
        psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null 2>&1 || true
fi
exit 0
