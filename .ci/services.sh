#!/usr/bin/env bash
# Starts the services the store tests need, on 127.0.0.1 (see test/services.ts for the URLs):
# Redis (6379), a 3-master Redis Cluster (7000-7002), two memcached servers (11211, 11212),
# PostgreSQL (5432), PgBouncer in transaction mode in front of it (6433; not 6432, which a distribution-started PgBouncer may hold) and MariaDB (3306). Run as root on Debian bookworm. Idempotent: a service
# that already answers is left alone, so running it twice is harmless.
# Prints one line per service; exits 1 if any of them still does not answer after ~30 s.
set -uo pipefail

MEMCACHED_PORTS=(11211 11212)
CLUSTER_PORTS=(7000 7001 7002)
CLUSTER_DIR=/var/lib/sessionkit-redis-cluster
PGBOUNCER_DIR=/var/lib/sessionkit-pgbouncer
PGBOUNCER_PORT=6433
WAIT_SECONDS=30

log() { printf '%s\n' "$*"; }

# --- probes: each succeeds only when the service answers a real request ---------------------

memcached_answers() { # port
	local reply
	reply=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "version\r\n" >&3 && head -c 7 <&3' _ "$1" 2>/dev/null) || return 1
	[[ $reply == VERSION ]]
}

redis_answers() { # port
	[[ $(timeout 2 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null) == PONG ]]
}

cluster_field() { # port field
	timeout 2 redis-cli -h 127.0.0.1 -p "$1" cluster info 2>/dev/null | tr -d '\r' | sed -n "s/^$2://p"
}

cluster_ok() {
	local port
	for port in "${CLUSTER_PORTS[@]}"; do
		[[ $(cluster_field "$port" cluster_state) == ok ]] || return 1
	done
}

# Formed = every node knows all three and all 16384 slots are assigned (state may still be settling).
cluster_formed() {
	local port
	for port in "${CLUSTER_PORTS[@]}"; do
		[[ $(cluster_field "$port" cluster_slots_assigned) == 16384 ]] || return 1
		[[ $(cluster_field "$port" cluster_known_nodes) == "${#CLUSTER_PORTS[@]}" ]] || return 1
	done
}

cluster_empty() {
	local port
	for port in "${CLUSTER_PORTS[@]}"; do
		[[ $(cluster_field "$port" cluster_slots_assigned) == 0 ]] || return 1
	done
}

postgres_answers() { pg_isready -q -h 127.0.0.1 -p 5432 -t 2 2>/dev/null; }

# A query through PgBouncer reaches PostgreSQL: pg_isready alone would accept a bouncer whose
# server side is down.
pgbouncer_answers() {
	[[ $(timeout 3 psql -h 127.0.0.1 -p "$PGBOUNCER_PORT" -U postgres -d test -Atc 'select 1' 2>/dev/null) == 1 ]]
}

# mariadb-admin ping exits 0 whenever the server runs, even if the login is refused.
mariadb_answers() { timeout 3 mariadb-admin --protocol=tcp -h 127.0.0.1 -P 3306 -u root --connect-timeout=2 ping >/dev/null 2>&1; }

wait_for() { # probe args...
	local deadline=$((SECONDS + WAIT_SECONDS))
	until "$@"; do
		((SECONDS >= deadline)) && return 1
		sleep 0.5
	done
}

# --- packages ------------------------------------------------------------------------------

install_packages() {
	local missing=()
	command -v memcached >/dev/null || missing+=(memcached)
	command -v redis-server >/dev/null || missing+=(redis-server)
	command -v redis-cli >/dev/null || missing+=(redis-tools)
	[[ -x /usr/sbin/pgbouncer ]] || missing+=(pgbouncer)
	((${#missing[@]} == 0)) && return 0
	export DEBIAN_FRONTEND=noninteractive
	# Refresh the package lists only when installing from the current ones fails (fresh image).
	if ! apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
		apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null || {
			log "packages: could not install ${missing[*]}"
			return 1
		}
	fi
	log "packages: installed ${missing[*]}"
}

# --- starters ------------------------------------------------------------------------------

start_memcached() { # port
	local user=memcache
	id memcache >/dev/null 2>&1 || user=root
	memcached -d -u "$user" -l 127.0.0.1 -p "$1" -U 0 -m 64
}

start_redis() {
	mkdir -p /var/lib/redis /var/log/redis
	redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
		--dir /var/lib/redis --logfile /var/log/redis/ci.log
}

start_cluster_node() { # port
	local dir="$CLUSTER_DIR/$1"
	mkdir -p "$dir"
	redis-server --daemonize yes --bind 127.0.0.1 --port "$1" --cluster-enabled yes \
		--cluster-config-file nodes.conf --cluster-node-timeout 5000 --save "" --appendonly no \
		--dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"
}

# Transaction pooling, as apps run it in front of PostgreSQL; trust, as the server here.
start_pgbouncer() {
	mkdir -p "$PGBOUNCER_DIR"
	cat >"$PGBOUNCER_DIR/pgbouncer.ini" <<-INI
		[databases]
		test = host=127.0.0.1 port=5432 dbname=test
		[pgbouncer]
		listen_addr = 127.0.0.1
		listen_port = $PGBOUNCER_PORT
		unix_socket_dir =
		auth_type = trust
		auth_file = $PGBOUNCER_DIR/users.txt
		pool_mode = transaction
		logfile = $PGBOUNCER_DIR/pgbouncer.log
		pidfile = $PGBOUNCER_DIR/pgbouncer.pid
	INI
	printf '"postgres" ""\n' >"$PGBOUNCER_DIR/users.txt"
	chown -R postgres: "$PGBOUNCER_DIR"
	# PgBouncer refuses to run as root.
	su postgres -s /bin/sh -c "/usr/sbin/pgbouncer -d '$PGBOUNCER_DIR/pgbouncer.ini'" >/dev/null
}

create_cluster() {
	local port hosts=()
	# A node left from a half-made cluster (e.g. one dir wiped) must be empty before create.
	for port in "${CLUSTER_PORTS[@]}"; do
		redis-cli -h 127.0.0.1 -p "$port" flushall >/dev/null 2>&1
		redis-cli -h 127.0.0.1 -p "$port" cluster reset hard >/dev/null 2>&1
		hosts+=("127.0.0.1:$port")
	done
	redis-cli --cluster create "${hosts[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
}

# --- main ----------------------------------------------------------------------------------

failed=0
report() { # name probe-result(0/1) how
	if (($2 == 0)); then log "$1: up ($3)"; else
		log "$1: NOT answering after ${WAIT_SECONDS}s"
		failed=1
	fi
}

install_packages || failed=1

for port in "${MEMCACHED_PORTS[@]}"; do
	how="already running"
	if ! memcached_answers "$port"; then
		start_memcached "$port"
		how="started"
	fi
	wait_for memcached_answers "$port"
	report "memcached 127.0.0.1:$port" $? "$how"
done

how="already running"
if ! redis_answers 6379; then
	start_redis
	how="started"
fi
wait_for redis_answers 6379
report "redis 127.0.0.1:6379" $? "$how"

how="already running"
if ! cluster_ok; then
	for port in "${CLUSTER_PORTS[@]}"; do
		redis_answers "$port" || start_cluster_node "$port"
	done
	for port in "${CLUSTER_PORTS[@]}"; do wait_for redis_answers "$port"; done
	# Nodes restarted with their nodes.conf re-form by themselves; fresh ones (no slots) need
	# create; a half-formed set gets a bounded chance to settle, then is rebuilt.
	if cluster_formed; then how="started"
	elif cluster_empty || ! WAIT_SECONDS=10 wait_for cluster_formed; then
		create_cluster
		how="created"
	else how="started"
	fi
fi
wait_for cluster_ok
report "redis-cluster 127.0.0.1:${CLUSTER_PORTS[0]}-${CLUSTER_PORTS[-1]}" $? "$how"

if [[ -d /etc/postgresql ]] && command -v pg_ctlcluster >/dev/null; then
	how="already running"
	if ! postgres_answers; then
		pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
		how="started"
	fi
	wait_for postgres_answers
	report "postgres 127.0.0.1:5432" $? "$how"
	how="already running"
	if ! pgbouncer_answers; then
		start_pgbouncer
		how="started"
	fi
	wait_for pgbouncer_answers
	report "pgbouncer 127.0.0.1:$PGBOUNCER_PORT" $? "$how"
else
	log "postgres 127.0.0.1:5432: not installed (skipped)"
fi

if [[ -x /usr/sbin/mariadbd ]]; then
	how="already running"
	if ! mariadb_answers; then
		install -d -o mysql -g mysql /run/mysqld 2>/dev/null || mkdir -p /run/mysqld
		start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
		how="started"
	fi
	wait_for mariadb_answers
	report "mariadb 127.0.0.1:3306" $? "$how"
else
	log "mariadb 127.0.0.1:3306: not installed (skipped)"
fi

exit "$failed"
