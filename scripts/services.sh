#!/usr/bin/env bash
# Local services for txoutbox's demo, tests and CI, all on loopback (127.0.0.1):
#   Apache Kafka 4.1.1 (KRaft, one combined broker+controller node, jars from Maven Central),
#   PostgreSQL (our own cluster, not Debian's system one) and MariaDB (our own instance).
#
# Usage:
#   scripts/services.sh up [kafka] [postgres] [mariadb]   start (default: kafka postgres), wait until
#                                                           ready, write the env file, print its path (a
#                                                           broker it starts begins with no topics)
#   scripts/services.sh up kafka-cluster                    a 3-node KRaft cluster besides (nodes 11, 12, 13:
#                                                           replication factor 3, min.insync.replicas=2); its
#                                                           brokers go to TXOUTBOX_KAFKA_CLUSTER_BOOTSTRAP
#   scripts/services.sh env                                 `export TXOUTBOX_...=...` lines for what is up
#                                                           (eval "$(scripts/services.sh env)")
#   scripts/services.sh status                              one line per service
#   scripts/services.sh down [service...]                   stop what we started (default: all)
#   scripts/services.sh reset [service...]                  down, then delete its data (default: all)
#   scripts/services.sh kafka-kill [node]                   SIGKILL the Kafka node (default node 1)
#   scripts/services.sh kafka-stop [node]                   SIGTERM it and wait (controlled shutdown)
#   scripts/services.sh kafka-start [node]                  start it again on the same data folder
#                                                           (node 11, 12 or 13: one node of the cluster)
#   scripts/services.sh kafka-lib                           fetch the Kafka jars if needed; print their folder
#   scripts/services.sh toxiproxy                           build Toxiproxy 2.12.0 with `go install` if needed;
#                                                           print its server binary (network-fault tests)
#   scripts/services.sh pg-bindir                           install PostgreSQL if needed; print its bin folder
#                                                           (both for tests that run private instances)
#   scripts/services.sh browser                             install Chromium and chromedriver if needed (Debian's
#                                                           chromium, chromium-driver; `up` does it too); print
#                                                           chromedriver's path (for the web console's browser tests)
#
# Service names: kafka; kafka-cluster; postgres (pg, postgresql); mariadb (mysql).
#
# A service that the environment already names is used as is and never started or stopped here:
#   TXOUTBOX_KAFKA_BOOTSTRAP (or KAFKA_BOOTSTRAP), TXOUTBOX_POSTGRES_URL (or DATABASE_URL when it is
#   a postgres:// URL), TXOUTBOX_MYSQL_URL. A value equal to our own local address counts as ours, so
#   a shell that did `eval "$(scripts/services.sh env)"` can still run `up`/`down` again.
#
# Settings (environment):
#   TXOUTBOX_SERVICES_DIR            data, logs, pids, env file   ($HOME/.cache/txoutbox/services)
#   TXOUTBOX_KAFKA_HOME              Kafka jar cache              ($HOME/.cache/txoutbox/kafka-4.1.1)
#   TXOUTBOX_KAFKA_PORT              broker port                  (19092)
#   TXOUTBOX_KAFKA_CONTROLLER_PORT   KRaft controller port        (19093)
#   TXOUTBOX_KAFKA_HEAP              JVM heap options             (-Xms512m -Xmx1g)
#   TXOUTBOX_KAFKA_CLUSTER_PORT      first cluster port           (29092: brokers 29092/94/96,
#                                                                  controllers 29093/95/97)
#   TXOUTBOX_KAFKA_CLUSTER_HEAP      heap of each cluster node    (-Xms128m -Xmx384m)
#   TXOUTBOX_POSTGRES_PORT           PostgreSQL port              (55432)
#   TXOUTBOX_MARIADB_PORT            MariaDB port                 (33306)
#   TXOUTBOX_SERVICES_TIMEOUT        seconds to wait for a service to become ready (120)
#   TXOUTBOX_KAFKA_KEEP_DATA         1: `up` keeps the broker's topics from its last run (default:
#                                    a broker that `up` starts begins empty; kafka-start keeps them)
#
# Progress goes to stderr; `up` prints only the env file's path on stdout.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
readonly SCRIPT_DIR
HOME="${HOME:-$(getent passwd "$(id -u)" | cut -d: -f6)}"

SERVICES_DIR="${TXOUTBOX_SERVICES_DIR:-$HOME/.cache/txoutbox/services}"
[[ $SERVICES_DIR == /* ]] || SERVICES_DIR="$PWD/$SERVICES_DIR"
readonly SERVICES_DIR
readonly ENV_FILE="$SERVICES_DIR/env"

readonly KAFKA_VERSION=4.1.1
readonly KAFKA_HOME_DIR="${TXOUTBOX_KAFKA_HOME:-$HOME/.cache/txoutbox/kafka-$KAFKA_VERSION}"
readonly KAFKA_LIB="$KAFKA_HOME_DIR/lib"
readonly KAFKA_PORT="${TXOUTBOX_KAFKA_PORT:-19092}"
readonly KAFKA_CONTROLLER_PORT="${TXOUTBOX_KAFKA_CONTROLLER_PORT:-19093}"
readonly KAFKA_HEAP="${TXOUTBOX_KAFKA_HEAP:--Xms512m -Xmx1g}"
readonly KAFKA_CLUSTER_PORT="${TXOUTBOX_KAFKA_CLUSTER_PORT:-29092}"
readonly KAFKA_CLUSTER_HEAP="${TXOUTBOX_KAFKA_CLUSTER_HEAP:--Xms128m -Xmx384m}"
readonly PG_PORT="${TXOUTBOX_POSTGRES_PORT:-55432}"
readonly MARIADB_PORT="${TXOUTBOX_MARIADB_PORT:-33306}"
readonly TIMEOUT="${TXOUTBOX_SERVICES_TIMEOUT:-120}"

# Credentials of the test databases (also in the URLs below).
readonly DB_USER=txoutbox DB_PASS=txoutbox DB_NAME=txoutbox

# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------

say() { printf '%s\n' "$*" >&2; }
die() {
	say "services.sh: error: $*"
	exit 1
}

now_us() { echo "${EPOCHREALTIME//[.,]/}"; }
# Seconds since a now_us timestamp, one decimal.
since() {
	local us=$(($(now_us) - $1))
	printf '%d.%d' $((us / 1000000)) $(((us / 100000) % 10))
}

# Prints the last lines of a log to stderr.
log_tail() {
	local file=$1 lines=${2:-40}
	if [[ -r $file ]]; then
		say "---- last $lines lines of $file ----"
		tail -n "$lines" "$file" >&2 || true
		say "---- end of $file ----"
	else
		say "(no log at $file)"
	fi
}

# True when the process exists and is not a zombie (an orphaned daemon may wait unreaped).
pid_alive() {
	local pid=${1:-} stat
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# First line of a pid file, digits only ("" when missing).
read_pid() {
	local line=""
	if [[ -r $1 ]]; then IFS= read -r line <"$1" || true; fi
	printf '%s' "${line//[^0-9]/}"
}

# True when the command line of process $1 contains the string $2.
proc_has() {
	local cmdline
	cmdline=$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	[[ $cmdline == *"$2"* ]]
}

# Waits until a process is gone (up to $2 seconds).
wait_gone() {
	local pid=$1 secs=$2 t0
	t0=$(now_us)
	while pid_alive "$pid"; do
		(($(now_us) - t0 < secs * 1000000)) || return 1
		sleep 0.1
	done
}

# Is anything listening on TCP port $1 (any address)?
port_listening() {
	local port=$1
	if command -v ss >/dev/null 2>&1; then
		[[ -n $(ss -Hltn "sport = :$port" 2>/dev/null) ]]
	else
		port_accepts "$port"
	fi
}

# Does 127.0.0.1:$1 accept a TCP connection right now?
port_accepts() {
	# shellcheck disable=SC2016 # $1 is expanded by the inner bash
	timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

refuse_taken_port() { # service port what-env-var
	if port_listening "$2"; then
		local who=""
		command -v ss >/dev/null 2>&1 && who=$(ss -Hltnp "sport = :$2" 2>/dev/null | head -n 3 || true)
		die "$1: port $2 is already in use by a process that is not ours; stop it or choose another port with $3=...${who:+
$who}"
	fi
}

# Inner script for `setsid bash -c "$LAUNCHER" _ PIDFILE DIR CMD...`: records its own pid, changes to
# DIR, then becomes CMD (exec), so PIDFILE holds the daemon's pid whether or not setsid had to fork.
# Run it as a plain `setsid … &` (never inside `( … & )`, whose extra shell would wait for the
# daemon while holding our lock and the caller's stdout).
# shellcheck disable=SC2016 # expanded by the inner bash
readonly LAUNCHER='echo $$ >"$1"; cd "$2" || exit 1; shift 2; exec "$@"'

# Runs a command as OS user $1 (when we are root), from / so it never trips over an unreadable cwd.
as_user() {
	local user=$1
	shift
	if [[ $EUID -eq 0 && $user != root ]]; then
		(cd / && runuser -u "$user" -- "$@")
	else
		(cd / && "$@")
	fi
}

APT_UPDATED=0
# apt-get install, with `apt-get update` once first; keeps the packages' own services from starting.
apt_install() {
	[[ $EUID -eq 0 ]] || die "needs these Debian packages: $*; install them (as root) and run again"
	command -v apt-get >/dev/null 2>&1 || die "needs $* but there is no apt-get here; install them and run again"
	mkdir -p "$SERVICES_DIR"
	local log="$SERVICES_DIR/apt.log" policy=/usr/sbin/policy-rc.d policy_added=0 rc=0 t0
	t0=$(now_us)
	if [[ ! -e $policy ]]; then
		printf '#!/bin/sh\n# added by txoutbox scripts/services.sh during apt-get install\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		policy_added=1
	fi
	if ((!APT_UPDATED)); then
		say "apt: apt-get update…"
		DEBIAN_FRONTEND=noninteractive apt-get update </dev/null >>"$log" 2>&1 9>&- || rc=$?
		APT_UPDATED=1
	fi
	if ((rc == 0)); then
		say "apt: installing $*…"
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" </dev/null >>"$log" 2>&1 9>&- || rc=$?
	fi
	((policy_added)) && rm -f "$policy"
	if ((rc != 0)); then
		log_tail "$log" 30
		die "apt-get install $* failed (exit $rc)"
	fi
	say "apt: installed $* in $(since "$t0") s"
}

# Data folder root for a database server that runs as OS user $2 (postgres, mysql): normally
# $SERVICES_DIR/$1, but that user must be able to reach it; when it cannot (e.g. $HOME is /root,
# mode 700) the data lives in /var/tmp/txoutbox-<hash of SERVICES_DIR>/$1 and $SERVICES_DIR/$1 is
# a symlink to it. With $3 = create, makes the folder (owned by that user); else prints "" when the
# service was never set up.
db_root() {
	local name=$1 user=$2 mode=${3:-} link="$SERVICES_DIR/$1" target base
	if [[ -L $link ]]; then
		target=$(readlink "$link")
	elif [[ -d $link ]]; then
		target=$link
	elif [[ $mode != create ]]; then
		return 0
	else
		mkdir -p "$SERVICES_DIR"
		if [[ $EUID -ne 0 ]] || as_user "$user" test -x "$SERVICES_DIR"; then
			target=$link
		else
			base="/var/tmp/txoutbox-$(printf '%s' "$SERVICES_DIR" | sha256sum | cut -c1-10)"
			target="$base/$name"
			mkdir -p "$base"
			chmod 755 "$base"
			ln -sfn "$target" "$link"
		fi
	fi
	if [[ $mode == create && ! -d $target ]]; then
		mkdir -p "$target"
		[[ $EUID -eq 0 ]] && chown "$user:" "$target"
		chmod 700 "$target"
	fi
	printf '%s' "$target"
}

# ---------------------------------------------------------------------------------------------
# Kafka: functions per node (id, broker port, controller port) so a 3-node cluster can be added.
# ---------------------------------------------------------------------------------------------

kafka_external() {
	local v=${TXOUTBOX_KAFKA_BOOTSTRAP:-${KAFKA_BOOTSTRAP:-}}
	[[ -n $v && $v != "127.0.0.1:$KAFKA_PORT" ]] || return 1
	printf '%s' "$v"
}

kafka_node_dir() { printf '%s' "$SERVICES_DIR/kafka-$1"; }

# Prints the pid of our running node $1; fails when it is not running.
kafka_node_pid() {
	local dir pid
	dir=$(kafka_node_dir "$1")
	pid=$(read_pid "$dir/pid")
	pid_alive "$pid" && proc_has "$pid" "-Dtxoutbox.node.dir=$dir " || return 1
	printf '%s' "$pid"
}

# Broker port a node was set up with ("" when never formatted).
kafka_node_broker_port() {
	local f
	f="$(kafka_node_dir "$1")/ports"
	if [[ -r $f ]]; then cut -d' ' -f1 "$f"; fi
}

kafka_ensure_java() {
	local pkgs=()
	command -v java >/dev/null 2>&1 || pkgs+=(openjdk-17-jre-headless)
	command -v mvn >/dev/null 2>&1 || pkgs+=(maven)
	((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
}

# Copies the broker's jars from Maven Central into $KAFKA_LIB once (marker: .complete = pom hash).
kafka_fetch_jars() {
	local pom="$SCRIPT_DIR/kafka/pom.xml" stamp tmp t0 log
	[[ -r $pom ]] || die "kafka: missing $pom"
	stamp=$(sha256sum <"$pom" | cut -c1-16)
	[[ -r $KAFKA_LIB/.complete && $(<"$KAFKA_LIB/.complete") == "$stamp" ]] && return 0
	mkdir -p "$KAFKA_HOME_DIR"
	# Another services dir may share this jar cache: serialize on its own lock.
	exec 8>"$KAFKA_HOME_DIR/.lock"
	flock -w 900 8 || die "kafka: timed out waiting for $KAFKA_HOME_DIR/.lock"
	if [[ -r $KAFKA_LIB/.complete && $(<"$KAFKA_LIB/.complete") == "$stamp" ]]; then
		exec 8>&-
		return 0
	fi
	say "kafka: fetching jars (first run, ~35 s)…"
	t0=$(now_us)
	tmp="$KAFKA_HOME_DIR/lib.partial"
	log="$KAFKA_HOME_DIR/mvn.log"
	rm -rf "$tmp"
	mkdir -p "$tmp"
	if ! mvn -B -q -f "$pom" org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp" </dev/null >"$log" 2>&1 8>&- 9>&-; then
		log_tail "$log" 40
		die "kafka: fetching the jars with Maven failed (log: $log)"
	fi
	if ! compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null || ! compgen -G "$tmp/log4j-slf4j-impl-*.jar" >/dev/null; then
		die "kafka: Maven ran but $tmp lacks kafka_2.13-$KAFKA_VERSION.jar or log4j-slf4j-impl (log: $log)"
	fi
	printf '%s\n' "$stamp" >"$tmp/.complete"
	rm -rf "$KAFKA_LIB"
	mv "$tmp" "$KAFKA_LIB"
	exec 8>&-
	say "kafka: fetched $(find "$KAFKA_LIB" -name '*.jar' | wc -l) jars in $(since "$t0") s into $KAFKA_LIB"
}

# A random Kafka cluster id (22 chars of URL-safe base64 of 16 random bytes, not starting with '-').
kafka_random_cluster_id() {
	local id
	while :; do
		id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
		[[ $id == -* || ${#id} -ne 22 ]] || break
	done
	printf '%s' "$id"
}

# server.properties for node $1 (broker port $2, controller port $3): combined broker+controller.
# Single node: controller.quorum.bootstrap.servers and `format --standalone`. For a 3-node cluster
# use controller.quorum.voters=1@127.0.0.1:C1,2@…,3@… with a plain `format` of the same cluster id,
# and replication factor 3 / min ISR 2 for the internal topics.
kafka_write_config() {
	local id=$1 bport=$2 cport=$3 dir quorum rf=1 min_isr=1
	dir=$(kafka_node_dir "$id")
	quorum="controller.quorum.bootstrap.servers=127.0.0.1:$cport"
	if kafka_is_cluster_node "$id"; then
		quorum="controller.quorum.voters=$(kafka_cluster_voters)"
		rf=3
		min_isr=2
	fi
	cat >"$dir/server.properties" <<EOF
# Written by scripts/services.sh on every start of this node; edits are lost.
process.roles=broker,controller
node.id=$id
$quorum
listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$bport,CONTROLLER://127.0.0.1:$cport
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
# Unknown topics are errors: tests create their own topics with an admin client.
auto.create.topics.enable=false
num.partitions=3
default.replication.factor=$rf
min.insync.replicas=$min_isr
offsets.topic.replication.factor=$rf
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$min_isr
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$min_isr
group.initial.rebalance.delay.ms=0
EOF
	cp "$SCRIPT_DIR/kafka/log4j2.xml" "$dir/log4j2.xml"
}

# Formats node $1's data folder unless it already is (a formatted folder keeps topics and offsets);
# with $4 = fresh, deletes the folder's topics and formats it anew.
kafka_node_format() {
	local id=$1 bport=$2 cport=$3 fresh=${4:-} dir cluster_id t0
	dir=$(kafka_node_dir "$id")
	if [[ -z $fresh && -f $dir/data/meta.properties ]]; then
		local was
		was=$(cat "$dir/ports" 2>/dev/null || true)
		[[ -z $was || $was == "$bport $cport" ]] ||
			die "kafka: kafka-$id's data was formatted for ports '$was' (broker controller), not '$bport $cport'; use those ports or \`$0 reset kafka\`"
		return 0
	fi
	t0=$(now_us)
	local standalone=(--standalone) id_file=$dir/cluster.id
	if kafka_is_cluster_node "$id"; then
		# One cluster id for the three nodes, a plain format (the voters are in the config).
		standalone=()
		id_file=$SERVICES_DIR/kafka-cluster.id
	fi
	[[ -s $id_file ]] || kafka_random_cluster_id >"$id_file"
	cluster_id=$(<"$id_file")
	rm -rf "$dir/data"
	# The log of the node's earlier life goes with its data (one generation kept).
	if [[ -f $dir/node.log ]]; then mv -f "$dir/node.log" "$dir/node.log.1"; fi
	if ! java -cp "$KAFKA_LIB/*" kafka.tools.StorageTool format --cluster-id "$cluster_id" \
		--config "$dir/server.properties" "${standalone[@]}" </dev/null >"$dir/format.log" 2>&1 9>&-; then
		log_tail "$dir/format.log" 30
		die "kafka: formatting $dir/data failed"
	fi
	printf '%s %s\n' "$bport" "$cport" >"$dir/ports"
	say "kafka: formatted kafka-$id (cluster $cluster_id) in $(since "$t0") s"
}

# Starts node $1 (broker port $2, controller port $3) in the background; does not wait. With
# $4 = fresh it starts on an empty data folder. Sets KAFKA_T0 / KAFKA_LOG_OFFSET for kafka_node_wait.
KAFKA_T0=0
KAFKA_LOG_OFFSET=0
kafka_node_launch() {
	local id=$1 bport=$2 cport=$3 fresh=${4:-} dir heap
	dir=$(kafka_node_dir "$id")
	KAFKA_T0=$(now_us)
	refuse_taken_port kafka "$bport" TXOUTBOX_KAFKA_PORT
	refuse_taken_port kafka "$cport" TXOUTBOX_KAFKA_CONTROLLER_PORT
	mkdir -p "$dir"
	kafka_write_config "$id" "$bport" "$cport"
	kafka_node_format "$id" "$bport" "$cport" "$fresh"
	if kafka_is_cluster_node "$id"; then read -r -a heap <<<"$KAFKA_CLUSTER_HEAP"; else read -r -a heap <<<"$KAFKA_HEAP"; fi
	printf '\n===== scripts/services.sh: starting kafka-%s at %s =====\n' "$id" "$(date -Is)" >>"$dir/node.log"
	KAFKA_LOG_OFFSET=$(stat -c %s "$dir/node.log")
	rm -f "$dir/pid"
	# setsid: own session, so the node outlives this script and its terminal; the wrapper records
	# its own pid and then becomes java (exec), so the pid file holds the JVM's pid.
	setsid bash -c "$LAUNCHER" _ "$dir/pid" "$dir" \
		java "${heap[@]}" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
		"-Dtxoutbox.node.dir=$dir" "-Dlog4j2.configurationFile=$dir/log4j2.xml" \
		-cp "$KAFKA_LIB/*" kafka.Kafka "$dir/server.properties" \
		</dev/null >>"$dir/node.log" 2>&1 8>&- 9>&- &
	say "kafka: starting kafka-$id on 127.0.0.1:$bport (controller $cport)…"
}

# Waits until node $1 logged 'Kafka Server started' (since its launch) and its port accepts.
kafka_node_wait() {
	local id=$1 bport=$2 dir pid=""
	dir=$(kafka_node_dir "$id")
	while :; do
		[[ -n $pid ]] || pid=$(read_pid "$dir/pid")
		if [[ -n $pid ]] && ! pid_alive "$pid"; then
			log_tail "$dir/node.log" 60
			die "kafka: kafka-$id (pid $pid) exited while starting; log: $dir/node.log"
		fi
		if [[ -n $pid ]] &&
			tail -c +"$((KAFKA_LOG_OFFSET + 1))" "$dir/node.log" | grep -F 'Kafka Server started' >/dev/null &&
			port_accepts "$bport"; then
			break
		fi
		if (($(now_us) - KAFKA_T0 > TIMEOUT * 1000000)); then
			log_tail "$dir/node.log" 60
			die "kafka: kafka-$id not ready after ${TIMEOUT} s (pid ${pid:-?}); log: $dir/node.log"
		fi
		sleep 0.2
	done
	say "kafka: ready on 127.0.0.1:$bport in $(since "$KAFKA_T0") s (pid $pid, log $dir/node.log)"
}

# Stops node $1: signal TERM (controlled shutdown, waits) or KILL.
kafka_node_stop() {
	local id=$1 sig=${2:-TERM} pid t0
	pid=$(kafka_node_pid "$id") || {
		say "kafka: kafka-$id is not running"
		return 0
	}
	t0=$(now_us)
	kill -"$sig" "$pid"
	if ! wait_gone "$pid" 60; then
		say "kafka: kafka-$id (pid $pid) still up 60 s after SIG$sig; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 10 || die "kafka: kafka-$id (pid $pid) does not die"
	fi
	rm -f "$(kafka_node_dir "$id")/pid"
	say "kafka: kafka-$id stopped with SIG$sig in $(since "$t0") s"
}

# The nodes of the cluster: "id broker-port controller-port" per line. One node for now.
kafka_nodes() { printf '1 %s %s\n' "$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT"; }

# The 3-node cluster (`up kafka-cluster`): nodes 11, 12, 13 on consecutive ports.
kafka_cluster_nodes() {
	local i
	for i in 0 1 2; do
		printf '%s %s %s\n' "$((11 + i))" "$((KAFKA_CLUSTER_PORT + 2 * i))" "$((KAFKA_CLUSTER_PORT + 2 * i + 1))"
	done
}

kafka_is_cluster_node() { [[ $1 == 11 || $1 == 12 || $1 == 13 ]]; }

kafka_cluster_voters() {
	local id _b cport out=""
	while read -r id _b cport; do out+="${out:+,}$id@127.0.0.1:$cport"; done < <(kafka_cluster_nodes)
	printf '%s' "$out"
}

kafka_node_ports() { # id -> "bport cport"
	local id bport cport
	while read -r id bport cport; do
		[[ $id == "$1" ]] && {
			printf '%s %s' "$bport" "$cport"
			return 0
		}
	done < <(kafka_nodes; kafka_cluster_nodes)
	die "kafka: no node $1 (nodes: $( (kafka_nodes; kafka_cluster_nodes) | cut -d' ' -f1 | tr '\n' ' '))"
}

# Phase 1 of `up kafka`: launch what is not running. Sets KAFKA_PENDING to the nodes to wait for.
KAFKA_PENDING=()
kafka_launch() {
	local nodes=${1:-kafka_nodes} ext id bport cport pid fresh=fresh
	if [[ $nodes == kafka_nodes ]] && ext=$(kafka_external); then
		say "kafka: using $ext from the environment (nothing started)"
		return 0
	fi
	# Tests and benchmarks create their own topics, so a broker (or cluster) that `up` starts
	# begins on empty data: years of test topics would otherwise make every start slower (a
	# node replays each partition's log before it serves). Not while one of its nodes still
	# runs (a cluster node rejoins its peers with its data), nor with TXOUTBOX_KAFKA_KEEP_DATA=1.
	if [[ ${TXOUTBOX_KAFKA_KEEP_DATA:-} == 1 ]]; then fresh=""; fi
	while read -r id bport cport; do
		if kafka_node_pid "$id" >/dev/null; then fresh=""; fi
	done < <("$nodes")
	while read -r id bport cport; do
		if pid=$(kafka_node_pid "$id"); then
			if port_accepts "$(kafka_node_broker_port "$id")"; then
				say "kafka: kafka-$id already running on 127.0.0.1:$(kafka_node_broker_port "$id") (pid $pid)"
				continue
			fi
			say "kafka: kafka-$id running (pid $pid) but not serving yet; waiting"
			KAFKA_T0=$(now_us)
			KAFKA_LOG_OFFSET=0
		else
			kafka_ensure_java
			kafka_fetch_jars
			kafka_node_launch "$id" "$bport" "$cport" "$fresh"
		fi
		KAFKA_PENDING+=("$id:$bport")
	done < <("$nodes")
}

kafka_wait() {
	local n
	for n in "${KAFKA_PENDING[@]}"; do
		kafka_node_wait "${n%%:*}" "${n##*:}"
	done
	KAFKA_PENDING=()
}

kafka_env() {
	local ext
	if ext=$(kafka_external); then
		printf '%s' "$ext"
	elif kafka_node_pid 1 >/dev/null; then
		printf '127.0.0.1:%s' "$(kafka_node_broker_port 1)"
	else
		return 1
	fi
}

# Stops the cluster's nodes together: one by one, the last could not finish its controlled
# shutdown (no controller quorum left) and would wait for the SIGKILL after 60 s.
kafka_cluster_down() {
	local id _b _c pid pids=() t0
	t0=$(now_us)
	while read -r id _b _c; do
		if pid=$(kafka_node_pid "$id"); then
			kill -TERM "$pid"
			pids+=("$id:$pid")
		fi
	done < <(kafka_cluster_nodes)
	((${#pids[@]})) || {
		say "kafka: the cluster is not running"
		return 0
	}
	for id in "${pids[@]}"; do
		pid=${id##*:}
		if ! wait_gone "$pid" 30; then
			say "kafka: kafka-${id%%:*} (pid $pid) still up 30 s after SIGTERM; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			wait_gone "$pid" 10 || die "kafka: kafka-${id%%:*} (pid $pid) does not die"
		fi
		rm -f "$(kafka_node_dir "${id%%:*}")/pid"
	done
	say "kafka: cluster stopped in $(since "$t0") s"
}

# The cluster's brokers while at least one of its nodes runs.
kafka_cluster_env() {
	local id bport _c out="" up=""
	while read -r id bport _c; do
		out+="${out:+,}127.0.0.1:$bport"
		kafka_node_pid "$id" >/dev/null && up=1
	done < <(kafka_cluster_nodes)
	[[ -n $up ]] || return 1
	printf '%s' "$out"
}

kafka_status() {
	local nodes=${1:-kafka_nodes} ext id bport cport pid
	if [[ $nodes == kafka_nodes ]] && ext=$(kafka_external); then
		printf 'kafka      external  %s\n' "$ext"
		return 0
	fi
	while read -r id bport cport; do
		if pid=$(kafka_node_pid "$id"); then
			printf 'kafka-%s    running   127.0.0.1:%s  pid %s  %s\n' "$id" "$(kafka_node_broker_port "$id")" "$pid" "$(kafka_node_dir "$id")"
		elif [[ -f $(kafka_node_dir "$id")/data/meta.properties ]]; then
			printf 'kafka-%s    stopped   (data kept in %s)\n' "$id" "$(kafka_node_dir "$id")"
		else
			printf 'kafka-%s    stopped\n' "$id"
		fi
	done < <("$nodes")
}

kafka_down() {
	local id _b _c
	while read -r id _b _c; do
		kafka_node_stop "$id" TERM
	done < <(kafka_nodes)
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL: our own cluster (initdb) as OS user postgres, not Debian's system cluster.
# ---------------------------------------------------------------------------------------------

pg_external() {
	local v=${TXOUTBOX_POSTGRES_URL:-}
	if [[ -z $v && ${DATABASE_URL:-} =~ ^postgres(ql)?:// ]]; then v=$DATABASE_URL; fi
	[[ -n $v && $v != "$(pg_url "$PG_PORT")" ]] || return 1
	printf '%s' "$v"
}

pg_url() { printf 'postgres://%s:%s@127.0.0.1:%s/%s' "$DB_USER" "$DB_PASS" "$1" "$DB_NAME"; }

pg_os_user() { if [[ $EUID -eq 0 ]]; then echo postgres; else id -un; fi; }

# Highest installed PostgreSQL's bin folder ("" when none).
pg_bindir() {
	local d best=""
	for d in /usr/lib/postgresql/*/bin; do
		[[ -x $d/initdb && -x $d/pg_ctl ]] && best=$(printf '%s\n%s\n' "$best" "$d" | sed '/^$/d' | sort -V | tail -n 1)
	done
	if [[ -z $best ]] && command -v initdb >/dev/null 2>&1; then best=$(dirname "$(command -v initdb)"); fi
	printf '%s' "$best"
}

# Prints the pid of our running postmaster; fails when it is not running.
pg_pid() {
	local root pid
	root=$(db_root postgres "$(pg_os_user)")
	[[ -n $root ]] || return 1
	pid=$(read_pid "$root/data/postmaster.pid")
	pid_alive "$pid" && proc_has "$pid" "$root/data" || return 1
	printf '%s' "$pid"
}

# Port of our running postmaster (line 4 of postmaster.pid).
pg_running_port() {
	local root
	root=$(db_root postgres "$(pg_os_user)")
	sed -n 4p "$root/data/postmaster.pid" 2>/dev/null | tr -dc 0-9
}

pg_ensure_installed() {
	[[ -n $(pg_bindir) ]] && return 0
	apt_install postgresql
	# If Debian's own cluster got started anyway, stop it: we run our own.
	if command -v pg_lsclusters >/dev/null 2>&1; then
		local ver name _port status _rest
		while read -r ver name _port status _rest; do
			[[ $status == online* ]] && { pg_ctlcluster "$ver" "$name" stop 9>&- || true; }
		done < <(pg_lsclusters -h 2>/dev/null || true)
	fi
	[[ -n $(pg_bindir) ]] || die "postgres: installed the postgresql package but found no initdb under /usr/lib/postgresql/*/bin"
}

# Headless Chromium and its WebDriver for the web console's browser tests (idempotent).
browser_ensure_installed() {
	command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return 0
	apt_install chromium chromium-driver
	command -v chromedriver >/dev/null 2>&1 || die "chromium: installed chromium-driver but found no chromedriver on PATH"
}

pg_up() {
	local ext pid bin user root t0 conf
	if ext=$(pg_external); then
		say "postgres: using $ext from the environment (nothing started)"
		return 0
	fi
	if pid=$(pg_pid); then
		say "postgres: already running on 127.0.0.1:$(pg_running_port) (pid $pid)"
		return 0
	fi
	t0=$(now_us)
	refuse_taken_port postgres "$PG_PORT" TXOUTBOX_POSTGRES_PORT
	pg_ensure_installed
	bin=$(pg_bindir)
	user=$(pg_os_user)
	root=$(db_root postgres "$user" create)
	if [[ ! -f $root/data/PG_VERSION ]]; then
		say "postgres: initdb ($bin) into $root/data…"
		rm -rf "$root/data"
		if ! as_user "$user" "$bin/initdb" -D "$root/data" --no-locale --encoding=UTF8 \
			--auth-local=peer --auth-host=scram-sha-256 </dev/null >"$root/initdb.log" 2>&1 9>&-; then
			log_tail "$root/initdb.log" 30
			die "postgres: initdb failed"
		fi
		printf "\n# txoutbox: settings of scripts/services.sh (rewritten on every start)\ninclude_if_exists = 'txoutbox.conf'\n" >>"$root/data/postgresql.conf"
	fi
	as_user "$user" mkdir -p "$root/run"
	conf="$root/data/txoutbox.conf"
	cat >"$conf" <<EOF
# Written by scripts/services.sh on every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$root/run'
max_connections = 300
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
# A replication slot left behind by a killed test holds WAL back forever; past this much the
# server invalidates it instead of filling the disk (running relays stay far below it).
max_slot_wal_keep_size = 8GB
shared_buffers = 256MB
EOF
	[[ $EUID -eq 0 ]] && chown "$user:" "$conf"
	if ! as_user "$user" "$bin/pg_ctl" -D "$root/data" -l "$root/postgres.log" -w -t "$TIMEOUT" start \
		</dev/null >"$root/pg_ctl.log" 2>&1 9>&-; then
		cat "$root/pg_ctl.log" >&2 || true
		log_tail "$root/postgres.log" 40
		die "postgres: did not start (log: $root/postgres.log)"
	fi
	until port_accepts "$PG_PORT"; do
		if (($(now_us) - t0 > TIMEOUT * 1000000)); then
			log_tail "$root/postgres.log" 40
			die "postgres: started but 127.0.0.1:$PG_PORT does not accept connections"
		fi
		sleep 0.2
	done
	# Role and database: idempotent, re-applied on every start.
	if ! as_user "$user" "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$root/run" -p "$PG_PORT" -d postgres \
		>"$root/bootstrap.log" 2>&1 9>&- <<'SQL'; then
DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'txoutbox') THEN
    CREATE ROLE txoutbox LOGIN SUPERUSER REPLICATION PASSWORD 'txoutbox';
  ELSE
    ALTER ROLE txoutbox LOGIN SUPERUSER REPLICATION PASSWORD 'txoutbox';
  END IF;
END
$$;
SELECT 'CREATE DATABASE txoutbox OWNER txoutbox'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'txoutbox')\gexec
SQL
		cat "$root/bootstrap.log" >&2 || true
		die "postgres: creating role/database $DB_USER/$DB_NAME failed"
	fi
	say "postgres: ready on 127.0.0.1:$PG_PORT in $(since "$t0") s (pid $(pg_pid || echo ?), log $root/postgres.log)"
}

pg_env() {
	local ext
	if ext=$(pg_external); then
		printf '%s' "$ext"
	elif pg_pid >/dev/null; then
		pg_url "$(pg_running_port)"
	else
		return 1
	fi
}

pg_status() {
	local ext pid root
	root=$(db_root postgres "$(pg_os_user)")
	if ext=$(pg_external); then
		printf 'postgres   external  %s\n' "$ext"
	elif pid=$(pg_pid); then
		printf 'postgres   running   127.0.0.1:%s  pid %s  %s\n' "$(pg_running_port)" "$pid" "$root"
	elif [[ -n $root && -f $root/data/PG_VERSION ]]; then
		printf 'postgres   stopped   (data kept in %s)\n' "$root"
	else
		printf 'postgres   stopped\n'
	fi
}

pg_down() {
	local pid root t0 bin
	if ! pid=$(pg_pid); then
		say "postgres: not running"
		return 0
	fi
	t0=$(now_us)
	root=$(db_root postgres "$(pg_os_user)")
	bin=$(pg_bindir)
	if ! as_user "$(pg_os_user)" "$bin/pg_ctl" -D "$root/data" -m fast -w -t 60 stop </dev/null >/dev/null 2>&1 9>&-; then
		say "postgres: pg_ctl stop failed; sending SIGQUIT to $pid"
		kill -QUIT "$pid" 2>/dev/null || true
		wait_gone "$pid" 20 || die "postgres: pid $pid does not stop"
	fi
	say "postgres: stopped in $(since "$t0") s"
}

# ---------------------------------------------------------------------------------------------
# MariaDB: our own mariadbd (mariadb-install-db into our data folder), not the package's service.
# ---------------------------------------------------------------------------------------------

mariadb_external() {
	local v=${TXOUTBOX_MYSQL_URL:-}
	[[ -n $v && $v != "$(mariadb_url "$MARIADB_PORT")" ]] || return 1
	printf '%s' "$v"
}

mariadb_url() { printf 'mysql://%s:%s@127.0.0.1:%s/%s' "$DB_USER" "$DB_PASS" "$1" "$DB_NAME"; }

mariadb_os_user() { if [[ $EUID -eq 0 ]]; then echo mysql; else id -un; fi; }

mariadb_bin() { # name of a MariaDB program -> its path ("" when missing)
	local p
	p=$(command -v "$1" 2>/dev/null) || p=""
	[[ -z $p && -x /usr/sbin/$1 ]] && p=/usr/sbin/$1
	printf '%s' "$p"
}

# Prints the pid of our running mariadbd; fails when it is not running.
mariadb_pid() {
	local root pid
	[[ $EUID -ne 0 ]] || id mysql >/dev/null 2>&1 || return 1
	root=$(db_root mariadb "$(mariadb_os_user)")
	[[ -n $root ]] || return 1
	pid=$(read_pid "$root/pid")
	pid_alive "$pid" && proc_has "$pid" "--datadir=$root/data " || return 1
	printf '%s' "$pid"
}

mariadb_running_port() {
	local root
	root=$(db_root mariadb "$(mariadb_os_user)")
	cat "$root/port" 2>/dev/null || echo "$MARIADB_PORT"
}

# Client options to reach our server as its administrator (root over the unix socket).
mariadb_admin_args() {
	local root=$1
	printf '%s\n' --no-defaults --protocol=socket "--socket=$root/run/mysqld.sock" "--user=$(id -un)"
}

mariadb_ensure_installed() {
	if [[ -n $(mariadb_bin mariadbd) && -n $(mariadb_bin mariadb-install-db) && -n $(mariadb_bin mariadb) ]]; then
		return 0
	fi
	apt_install mariadb-server mariadb-client
	# Should the package's own server have started (on 3306), stop it: we run our own.
	local pid
	pid=$(read_pid /run/mysqld/mysqld.pid)
	if pid_alive "$pid"; then
		say "mariadb: stopping the package's own server (pid $pid)"
		kill -TERM "$pid" 2>/dev/null || true
		wait_gone "$pid" 60 || true
	fi
	[[ -n $(mariadb_bin mariadbd) ]] || die "mariadb: installed mariadb-server but found no mariadbd"
}

MARIADB_PENDING=0
MARIADB_T0=0
mariadb_launch() {
	local ext pid user root
	if ext=$(mariadb_external); then
		say "mariadb: using $ext from the environment (nothing started)"
		return 0
	fi
	if pid=$(mariadb_pid); then
		say "mariadb: already running on 127.0.0.1:$(mariadb_running_port) (pid $pid)"
		return 0
	fi
	MARIADB_T0=$(now_us)
	refuse_taken_port mariadb "$MARIADB_PORT" TXOUTBOX_MARIADB_PORT
	mariadb_ensure_installed
	user=$(mariadb_os_user)
	root=$(db_root mariadb "$user" create)
	local user_opt=()
	[[ $EUID -eq 0 ]] && user_opt=("--user=$user")
	if [[ ! -d $root/data/mysql ]]; then
		say "mariadb: mariadb-install-db into $root/data…"
		rm -rf "$root/data"
		if ! (cd / && "$(mariadb_bin mariadb-install-db)" --no-defaults --datadir="$root/data" "${user_opt[@]}" \
			--auth-root-authentication-method=socket --skip-test-db </dev/null >"$root/install-db.log" 2>&1 9>&-); then
			log_tail "$root/install-db.log" 30
			die "mariadb: mariadb-install-db failed"
		fi
	fi
	as_user "$user" mkdir -p "$root/run"
	rm -f "$root/pid"
	printf '%s\n' "$MARIADB_PORT" >"$root/port"
	printf '\n===== scripts/services.sh: starting mariadbd at %s =====\n' "$(date -Is)" >>"$root/mariadbd.out"
	setsid bash -c "$LAUNCHER" _ "$root/pid" / \
		"$(mariadb_bin mariadbd)" --no-defaults "--datadir=$root/data" "${user_opt[@]}" \
		--bind-address=127.0.0.1 "--port=$MARIADB_PORT" "--socket=$root/run/mysqld.sock" \
		"--pid-file=$root/run/mysqld.pid" "--log-error=$root/mariadb.log" \
		--max-connections=300 --max-allowed-packet=64M --innodb-flush-log-at-trx-commit=1 \
		--character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci --skip-name-resolve \
		</dev/null >>"$root/mariadbd.out" 2>&1 8>&- 9>&- &
	MARIADB_PENDING=1
	say "mariadb: starting on 127.0.0.1:$MARIADB_PORT…"
}

mariadb_wait() {
	((MARIADB_PENDING)) || return 0
	local root pid="" admin=()
	root=$(db_root mariadb "$(mariadb_os_user)")
	mapfile -t admin < <(mariadb_admin_args "$root")
	while :; do
		[[ -n $pid ]] || pid=$(read_pid "$root/pid")
		if [[ -n $pid ]] && ! pid_alive "$pid"; then
			log_tail "$root/mariadb.log" 40
			die "mariadb: mariadbd (pid $pid) exited while starting; log: $root/mariadb.log"
		fi
		if [[ -n $pid ]] && "$(mariadb_bin mariadb-admin)" "${admin[@]}" --connect-timeout=2 ping >/dev/null 2>&1 &&
			port_accepts "$MARIADB_PORT"; then
			break
		fi
		if (($(now_us) - MARIADB_T0 > TIMEOUT * 1000000)); then
			log_tail "$root/mariadb.log" 40
			die "mariadb: not ready after ${TIMEOUT} s; log: $root/mariadb.log"
		fi
		sleep 0.2
	done
	# User and database: idempotent, re-applied on every start.
	local host sql="CREATE DATABASE IF NOT EXISTS \`$DB_NAME\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;"
	for host in 127.0.0.1 localhost %; do
		sql+=" CREATE USER IF NOT EXISTS '$DB_USER'@'$host' IDENTIFIED BY '$DB_PASS';"
		sql+=" ALTER USER '$DB_USER'@'$host' IDENTIFIED BY '$DB_PASS';"
		sql+=" GRANT ALL PRIVILEGES ON *.* TO '$DB_USER'@'$host' WITH GRANT OPTION;"
	done
	if ! "$(mariadb_bin mariadb)" "${admin[@]}" -e "$sql" </dev/null >"$root/bootstrap.log" 2>&1; then
		cat "$root/bootstrap.log" >&2 || true
		die "mariadb: creating user/database $DB_USER/$DB_NAME failed"
	fi
	MARIADB_PENDING=0
	say "mariadb: ready on 127.0.0.1:$MARIADB_PORT in $(since "$MARIADB_T0") s (pid $pid, log $root/mariadb.log)"
}

mariadb_env() {
	local ext
	if ext=$(mariadb_external); then
		printf '%s' "$ext"
	elif mariadb_pid >/dev/null; then
		mariadb_url "$(mariadb_running_port)"
	else
		return 1
	fi
}

mariadb_status() {
	local ext pid root=""
	{ [[ $EUID -ne 0 ]] || id mysql >/dev/null 2>&1; } && root=$(db_root mariadb "$(mariadb_os_user)")
	if ext=$(mariadb_external); then
		printf 'mariadb    external  %s\n' "$ext"
	elif pid=$(mariadb_pid); then
		printf 'mariadb    running   127.0.0.1:%s  pid %s  %s\n' "$(mariadb_running_port)" "$pid" "$root"
	elif [[ -n $root && -d $root/data/mysql ]]; then
		printf 'mariadb    stopped   (data kept in %s)\n' "$root"
	else
		printf 'mariadb    stopped\n'
	fi
}

mariadb_down() {
	local pid root t0 admin=()
	if ! pid=$(mariadb_pid); then
		say "mariadb: not running"
		return 0
	fi
	t0=$(now_us)
	root=$(db_root mariadb "$(mariadb_os_user)")
	mapfile -t admin < <(mariadb_admin_args "$root")
	"$(mariadb_bin mariadb-admin)" "${admin[@]}" --connect-timeout=5 shutdown >/dev/null 2>&1 ||
		kill -TERM "$pid" 2>/dev/null || true
	if ! wait_gone "$pid" 60; then
		say "mariadb: pid $pid still up after 60 s; sending SIGKILL"
		kill -KILL "$pid" 2>/dev/null || true
		wait_gone "$pid" 10 || die "mariadb: pid $pid does not die"
	fi
	rm -f "$root/pid"
	say "mariadb: stopped in $(since "$t0") s"
}

# ---------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------

# Normalizes service names given on the command line into SERVICES (deduplicated, in given order).
SERVICES=()
parse_services() {
	local a s seen=" "
	SERVICES=()
	for a in "$@"; do
		case $a in
		kafka) s=kafka ;;
		kafka-cluster) s=kafka-cluster ;;
		postgres | postgresql | pg) s=postgres ;;
		mariadb | mysql) s=mariadb ;;
		*) die "unknown service '$a' (known: kafka, kafka-cluster, postgres, mariadb)" ;;
		esac
		[[ $seen == *" $s "* ]] || SERVICES+=("$s")
		seen+="$s "
	done
}

lock() {
	mkdir -p "$SERVICES_DIR"
	exec 9>"$SERVICES_DIR/.lock"
	flock -w 900 9 || die "timed out waiting for $SERVICES_DIR/.lock (another services.sh running?)"
}

cmd_env() {
	local v
	if v=$(kafka_env); then printf 'export TXOUTBOX_KAFKA_BOOTSTRAP=%q\n' "$v"; fi
	if v=$(kafka_cluster_env); then printf 'export TXOUTBOX_KAFKA_CLUSTER_BOOTSTRAP=%q\n' "$v"; fi
	if v=$(pg_env); then printf 'export TXOUTBOX_POSTGRES_URL=%q\n' "$v"; fi
	if v=$(mariadb_env); then printf 'export TXOUTBOX_MYSQL_URL=%q\n' "$v"; fi
}

write_env_file() {
	mkdir -p "$SERVICES_DIR"
	cmd_env >"$ENV_FILE.tmp"
	mv -f "$ENV_FILE.tmp" "$ENV_FILE"
}

cmd_up() {
	local t0 s
	t0=$(now_us)
	parse_services "$@"
	((${#SERVICES[@]})) || SERVICES=(kafka postgres)
	lock
	# Launch the slow starters first (Kafka's JVM, mariadbd), do PostgreSQL meanwhile, then wait.
	for s in "${SERVICES[@]}"; do [[ $s == kafka ]] && kafka_launch; done
	for s in "${SERVICES[@]}"; do [[ $s == kafka-cluster ]] && kafka_launch kafka_cluster_nodes; done
	for s in "${SERVICES[@]}"; do [[ $s == mariadb ]] && mariadb_launch; done
	for s in "${SERVICES[@]}"; do [[ $s == postgres ]] && pg_up; done
	for s in "${SERVICES[@]}"; do
		case $s in
		kafka | kafka-cluster) kafka_wait ;;
		mariadb) mariadb_wait ;;
		esac
	done
	write_env_file
	(browser_ensure_installed) || say "chromium: not installed; the web console's browser tests will be skipped"
	say "services: up (${SERVICES[*]}) in $(since "$t0") s; env: $ENV_FILE"
	printf '%s\n' "$ENV_FILE"
}

cmd_down() {
	local s
	parse_services "$@"
	((${#SERVICES[@]})) || SERVICES=(kafka kafka-cluster mariadb postgres)
	lock
	for s in "${SERVICES[@]}"; do
		case $s in
		kafka) kafka_down ;;
		kafka-cluster) kafka_cluster_down ;;
		postgres) pg_down ;;
		mariadb) mariadb_down ;;
		esac
	done
	write_env_file
}

cmd_reset() {
	local s root id _b _c
	parse_services "$@"
	((${#SERVICES[@]})) || SERVICES=(kafka kafka-cluster mariadb postgres)
	cmd_down "${SERVICES[@]}"
	for s in "${SERVICES[@]}"; do
		case $s in
		kafka)
			while read -r id _b _c; do rm -rf "$(kafka_node_dir "$id")"; done < <(kafka_nodes)
			;;
		kafka-cluster)
			while read -r id _b _c; do rm -rf "$(kafka_node_dir "$id")"; done < <(kafka_cluster_nodes)
			rm -f "$SERVICES_DIR/kafka-cluster.id"
			;;
		postgres)
			root=$(db_root postgres "$(pg_os_user)")
			[[ -z $root ]] || rm -rf "$root"
			rm -rf "$SERVICES_DIR/postgres"
			;;
		mariadb)
			root=""
			{ [[ $EUID -ne 0 ]] || id mysql >/dev/null 2>&1; } && root=$(db_root mariadb "$(mariadb_os_user)")
			[[ -z $root ]] || rm -rf "$root"
			rm -rf "$SERVICES_DIR/mariadb"
			;;
		esac
		say "$s: data deleted"
	done
}

cmd_status() {
	kafka_status
	# The cluster only once it was set up (`up kafka-cluster`).
	if [[ -d $(kafka_node_dir 11) ]]; then kafka_status kafka_cluster_nodes; fi
	pg_status
	mariadb_status
}

kafka_own_or_die() {
	local ext
	if [[ -n ${2:-} ]] && kafka_is_cluster_node "$2"; then return 0; fi
	if ext=$(kafka_external); then die "kafka: the environment names an external broker ($ext); $1 acts only on ours"; fi
}

cmd_kafka_signal() { # KILL|TERM [node]
	local sig=$1 id=${2:-1}
	kafka_own_or_die "kafka-$(tr '[:upper:]' '[:lower:]' <<<"$sig")" "$id"
	kafka_node_ports "$id" >/dev/null
	lock
	kafka_node_pid "$id" >/dev/null || die "kafka: kafka-$id is not running"
	kafka_node_stop "$id" "$sig"
	write_env_file
}

# For tests that run their own broker: the jars' folder (fetched on first use), on stdout.
cmd_kafka_lib() {
	kafka_ensure_java
	kafka_fetch_jars
	printf '%s\n' "$KAFKA_LIB"
}

# For tests that run their own PostgreSQL cluster: the bin folder (installed on first use), on stdout.
cmd_pg_bindir() {
	pg_ensure_installed
	pg_bindir
	printf '\n'
}

cmd_kafka_start() { # [node]
	local id=${1:-1} ports pid
	kafka_own_or_die kafka-start "$id"
	ports=$(kafka_node_ports "$id")
	lock
	if pid=$(kafka_node_pid "$id"); then
		say "kafka: kafka-$id already running (pid $pid)"
	else
		kafka_ensure_java
		kafka_fetch_jars
		# shellcheck disable=SC2086 # "bport cport"
		kafka_node_launch "$id" $ports
	fi
	kafka_node_wait "$id" "${ports%% *}"
	write_env_file
}

# For the network-fault tests: the Toxiproxy server binary, built from its Go module on first use.
readonly TOXIPROXY_VERSION=v2.12.0
cmd_toxiproxy() {
	local dir=$HOME/.cache/txoutbox/toxiproxy go t0
	if [[ -x $dir/bin/server && $(cat "$dir/version" 2>/dev/null) == "$TOXIPROXY_VERSION" ]]; then
		printf '%s\n' "$dir/bin/server"
		return 0
	fi
	go=$(command -v go || true)
	[[ -n $go || ! -x /usr/local/go/bin/go ]] || go=/usr/local/go/bin/go
	[[ -n $go ]] || die "toxiproxy: needs Go (1.22 or later) to build it; none found"
	mkdir -p "$dir"
	exec 8>"$dir/.lock"
	flock -w 900 8 || die "toxiproxy: timed out waiting for $dir/.lock"
	if [[ ! -x $dir/bin/server || $(cat "$dir/version" 2>/dev/null) != "$TOXIPROXY_VERSION" ]]; then
		t0=$(now_us)
		say "toxiproxy: building $TOXIPROXY_VERSION with go install (first run, ~1 min)…"
		GOBIN=$dir/bin "$go" install "github.com/Shopify/toxiproxy/v2/cmd/server@$TOXIPROXY_VERSION" </dev/null >"$dir/build.log" 2>&1 ||
			{
				log_tail "$dir/build.log" 30
				die "toxiproxy: go install failed (log: $dir/build.log)"
			}
		printf '%s\n' "$TOXIPROXY_VERSION" >"$dir/version"
		say "toxiproxy: built in $(since "$t0") s"
	fi
	printf '%s\n' "$dir/bin/server"
}

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
}

main() {
	local cmd=${1:-}
	[[ $# -eq 0 ]] || shift
	case $cmd in
	up) cmd_up "$@" ;;
	down) cmd_down "$@" ;;
	reset) cmd_reset "$@" ;;
	env) cmd_env ;;
	status) cmd_status ;;
	kafka-kill) cmd_kafka_signal KILL "$@" ;;
	kafka-stop) cmd_kafka_signal TERM "$@" ;;
	kafka-start) cmd_kafka_start "$@" ;;
	kafka-lib) cmd_kafka_lib ;;
	pg-bindir) cmd_pg_bindir ;;
	toxiproxy) cmd_toxiproxy ;;
	browser)
		browser_ensure_installed
		command -v chromedriver
		;;
	-h | --help | help)
		usage
		;;
	*)
		usage
		exit 2
		;;
	esac
}

main "$@"
