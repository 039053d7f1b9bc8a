#!/usr/bin/env bash
# The container image's build and start steps, performed on this host (which has no container
# engine), with the values read from deploy/Dockerfile rather than repeated here:
#
#  1. builds the binary with the build stage's `cargo build` command and ENV;
#  2. checks with ldd that every shared library the binary needs is found, and that each comes from
#     a package the runtime stage installs (on a Debian host of the image's release);
#  3. installs the binary where the runtime stage copies it, and starts ENTRYPOINT + CMD with the
#     runtime stage's ENV (and nothing else of this shell's environment), as its USER (when run as
#     root), with the database URL in a secret file (TXOUTBOX_DATABASE_URL_FILE) and a Kafka SASL
#     password in another (TXOUTBOX_KAFKA_PROPERTY_SASL_PASSWORD_FILE);
#  4. checks that EXPOSE is the port of TXOUTBOX_HTTP_LISTEN, runs the HEALTHCHECK command until it
#     reports healthy, checks that it reports a 503 (/health while the brokers are absent) and a
#     stopped daemon as unhealthy, that SIGTERM (STOPSIGNAL) stops the daemon with status 0, and
#     that no secret appears in its log.
#
# The database is an SQLite file and the brokers are absent (TXOUTBOX_BROKER_WAIT=0s), so that the
# check needs no service; with TXOUTBOX_POSTGRES_URL set (scripts/services.sh env) it uses that
# PostgreSQL instead.
#
#   scripts/image-check.sh                                  # the build in the dev profile
#   IMAGE_CHECK_PROFILE=release scripts/image-check.sh      # the Dockerfile's own release build
#
# The dev profile is the default: CI compiles the workspace in that profile for its tests anyway,
# while a release build of the daemon would add several minutes of CPU to every run. The profile
# changes neither the shared libraries the binary links nor how it starts.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly DOCKERFILE=deploy/Dockerfile
PROFILE=${IMAGE_CHECK_PROFILE:-dev}

die() { echo "image-check: FAIL: $*" >&2; exit 1; }
note() { echo "image-check: $*" >&2; }

# --- reading the Dockerfile -------------------------------------------------------------------

# The instructions, one per line: continuation lines joined, comments and blank lines dropped.
instructions() {
	awk '
		/^[[:space:]]*#/ { next }
		{ line = line $0 }
		/\\[[:space:]]*$/ { sub(/\\[[:space:]]*$/, " ", line); next }
		{ if (line ~ /[^[:space:]]/) print line; line = "" }
	' "$DOCKERFILE"
}

# The instructions of stage $1 ("build", or "runtime" for the last one), without its FROM.
stage() {
	instructions | awk -v want="$1" '
		toupper($1) == "FROM" { n++; name = (tolower($(NF-1)) == "as") ? $NF : ""; next }
		n > 0 { lines[n] = lines[n] $0 "\n"; names[n] = name }
		END {
			for (i = 1; i <= n; i++) if (names[i] == want) { printf "%s", lines[i]; exit }
			if (want == "runtime") printf "%s", lines[n]
		}'
}

# The argument of the first instruction $2 in the stage text $1 (empty when there is none).
argument() {
	printf '%s\n' "$1" | awk -v want="$2" 'toupper($1) == want { sub(/^[[:space:]]*[^[:space:]]+[[:space:]]+/, ""); print; exit }'
}

# The words of an exec-form JSON array (["a", "b"]), one per line; only plain strings are read.
exec_form() {
	local text=$1 item
	text=${text#*[}
	text=${text%]*}
	local IFS=,
	for item in $text; do
		item=$(printf '%s' "$item" | sed 's/^[[:space:]]*//; s/[[:space:]]*$//')
		[[ $item =~ ^\"([^\"\\]*)\"$ ]] || die "$DOCKERFILE: \`$1\` is not a plain exec-form array"
		printf '%s\n' "${BASH_REMATCH[1]}"
	done
}

# KEY=VALUE pairs of the ENV instructions of a stage, one per line (the `ENV KEY=VALUE` form).
env_pairs() {
	printf '%s\n' "$1" | awk 'toupper($1) == "ENV" { for (i = 2; i <= NF; i++) print $i }' | while read -r pair; do
		[[ $pair == *=* ]] || die "$DOCKERFILE: write ENV as KEY=VALUE ($pair)"
		printf '%s\n' "$pair"
	done
}

[[ -r $DOCKERFILE ]] || die "no $DOCKERFILE"
BUILD=$(stage build)
RUNTIME=$(stage runtime)
[[ -n $BUILD ]] || die "$DOCKERFILE has no stage named build"
[[ -n $RUNTIME ]] || die "$DOCKERFILE has no runtime stage"

BUILD_COMMAND=$(printf '%s\n' "$BUILD" | grep -o 'cargo build[^&;]*' | head -n 1 | sed 's/[[:space:]]*$//')
[[ -n $BUILD_COMMAND ]] || die "the build stage runs no \`cargo build\`"
PACKAGES=$(printf '%s\n' "$RUNTIME" | grep -o 'apt-get install[^&;]*' | head -n 1 \
	| tr ' ' '\n' | grep -v -e '^$' -e '^-' -e '^apt-get$' -e '^install$' || true)
[[ -n $PACKAGES ]] || die "the runtime stage installs no package"
# COPY --from=build <built binary> <where the image has it>
INSTALLED=$(argument "$RUNTIME" COPY | awk '{ print $NF }')
[[ $INSTALLED == /* ]] || die "the runtime stage copies the binary to no absolute path"
USER_SPEC=$(argument "$RUNTIME" USER)
EXPOSED=$(argument "$RUNTIME" EXPOSE | awk '{ print $1 }' | cut -d/ -f1)
HEALTHCHECK=$(argument "$RUNTIME" HEALTHCHECK)
HEALTH_COMMAND=${HEALTHCHECK#*CMD }
[[ $HEALTH_COMMAND != "$HEALTHCHECK" ]] || die "the HEALTHCHECK has no CMD"
STOP_SIGNAL=$(argument "$RUNTIME" STOPSIGNAL)
mapfile -t ENTRYPOINT < <(exec_form "$(argument "$RUNTIME" ENTRYPOINT)")
mapfile -t COMMAND < <(exec_form "$(argument "$RUNTIME" CMD)")
mapfile -t PROBE < <(exec_form "$HEALTH_COMMAND")
mapfile -t BUILD_ENV < <(env_pairs "$BUILD")
mapfile -t IMAGE_ENV < <(env_pairs "$RUNTIME")

# --- 1. the build stage ---------------------------------------------------------------------------

read -r -a cargo_args <<<"$BUILD_COMMAND"
profile_dir=release
if [[ $PROFILE != release ]]; then
	# The same command in the dev profile.
	mapfile -t cargo_args < <(printf '%s\n' "${cargo_args[@]}" | grep -vx -- --release)
	profile_dir=debug
fi
note "building: ${BUILD_ENV[*]} ${cargo_args[*]}"
started=$SECONDS
env "${BUILD_ENV[@]}" "${cargo_args[@]}" >&2
note "built in $((SECONDS - started)) s"
target_dir=$(cargo metadata --format-version 1 --no-deps --locked | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
binary="$target_dir/$profile_dir/${INSTALLED##*/}"
[[ -x $binary ]] || die "the build made no $binary"

# --- 2. shared libraries ----------------------------------------------------------------------------

libraries=$(ldd "$binary")
if grep -q 'not found' <<<"$libraries"; then
	die "the binary needs libraries this host lacks:"$'\n'"$(grep 'not found' <<<"$libraries")"
fi
image_release=$(instructions | awk -F'[= ]+' 'toupper($1) == "ARG" && $2 == "DEBIAN_RELEASE" { print $3; exit }')
host_release=$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")
if [[ -n $image_release && $host_release == "$image_release" ]] && command -v dpkg-query >/dev/null; then
	while read -r path; do
		real=$(readlink -f "$path")
		owner=""
		# Debian's merged /usr: dpkg knows a file under one of its two names.
		for candidate in "$path" "$real" "/usr$real" "${real#/usr}"; do
			owner=$(dpkg-query -S "$candidate" 2>/dev/null | head -n 1 | cut -d: -f1) && [[ -n $owner ]] && break
		done
		[[ -n $owner ]] || die "no Debian package owns $path"
		grep -qx "$owner" <<<"$PACKAGES" \
			|| die "the binary links $path from the package $owner, which the runtime stage does not install (it installs: $(echo $PACKAGES))"
		note "links ${path##*/} from $owner: installed by the runtime stage"
	done < <(awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' <<<"$libraries")
else
	note "this host is not Debian $image_release (it is ${host_release:-unknown}): library packages not compared"
fi

# --- 3. the runtime stage: start as the image does ---------------------------------------------------

work=$(mktemp -d)
daemon_pid=""
drop_schema() { :; }
cleanup() {
	if [[ -n $daemon_pid ]] && kill -0 "$daemon_pid" 2>/dev/null; then kill -KILL "$daemon_pid" 2>/dev/null || true; fi
	drop_schema
	rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
root="$work/image"
mkdir -p "$root$(dirname "$INSTALLED")" "$work/secrets" "$work/data"
cp "$binary" "$root$INSTALLED"

# The image's user, when this script may become it (as root); otherwise the current user.
as_user=()
uid=${USER_SPEC%%:*}
gid=${USER_SPEC#*:}
[[ $uid =~ ^[0-9]+$ && $gid =~ ^[0-9]+$ ]] || die "USER must be numeric uid:gid (Kubernetes' runAsNonRoot checks it): $USER_SPEC"
[[ $uid != 0 ]] || die "the image runs as root"
if [[ $(id -u) == 0 ]]; then
	as_user=(setpriv --reuid="$uid" --regid="$gid" --clear-groups)
	chown "$uid:$gid" "$work/data"
else
	note "not root: the daemon runs as $(id -un), not as the image's user $uid"
fi

secret_password="image-check-$RANDOM$RANDOM-secret"
if [[ -n ${TXOUTBOX_POSTGRES_URL:-} ]]; then
	database_url=$TXOUTBOX_POSTGRES_URL
	table="image_check_$$_$RANDOM.outbox_messages"
	note "database: the PostgreSQL of TXOUTBOX_POSTGRES_URL, table $table"
	psql "$database_url" -q -c "CREATE SCHEMA ${table%%.*}" >/dev/null || die "cannot create schema ${table%%.*}"
	drop_schema() { psql "$database_url" -q -c "DROP SCHEMA IF EXISTS ${table%%.*} CASCADE" >/dev/null 2>&1 || true; }
else
	database_url="sqlite://$work/data/outbox.db"
	table=outbox_messages
	note "database: an SQLite file"
fi
printf '%s\n' "$database_url" >"$work/secrets/database-url"
printf '%s\n' "$secret_password" >"$work/secrets/kafka-password"
chmod 0400 "$work/secrets/"*
[[ ${#as_user[@]} -eq 0 ]] || chown "$uid:$gid" "$work/secrets/"*

# A port nothing listens on: the brokers are absent.
closed_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2>/dev/null || echo 9)
image_env=(
	"PATH=$root$(dirname "$INSTALLED"):/usr/sbin:/usr/bin:/sbin:/bin"
	"${IMAGE_ENV[@]}"
)
run_env=(
	TXOUTBOX_DATABASE_URL_FILE="$work/secrets/database-url"
	TXOUTBOX_TABLE="$table"
	TXOUTBOX_MIGRATE=true
	TXOUTBOX_KAFKA_BOOTSTRAP="127.0.0.1:$closed_port"
	TXOUTBOX_BROKER_WAIT=0s
	TXOUTBOX_KAFKA_PROPERTY_SECURITY_PROTOCOL=SASL_PLAINTEXT
	TXOUTBOX_KAFKA_PROPERTY_SASL_MECHANISM=SCRAM-SHA-512
	TXOUTBOX_KAFKA_PROPERTY_SASL_USERNAME=relay
	TXOUTBOX_KAFKA_PROPERTY_SASL_PASSWORD_FILE="$work/secrets/kafka-password"
)

listen=""
for pair in "${IMAGE_ENV[@]}"; do [[ $pair == TXOUTBOX_HTTP_LISTEN=* ]] && listen=${pair#*=}; done
[[ -n $listen ]] || die "the runtime stage sets no TXOUTBOX_HTTP_LISTEN"
[[ ${listen##*:} == "$EXPOSED" ]] || die "EXPOSE $EXPOSED is not the port of TXOUTBOX_HTTP_LISTEN=$listen"
if (exec 3<>"/dev/tcp/127.0.0.1/$EXPOSED") 2>/dev/null; then
	die "port $EXPOSED is taken on this host: the daemon could not listen where the image does"
fi

note "starting: ${ENTRYPOINT[*]} ${COMMAND[*]} (as ${USER_SPEC}; ${IMAGE_ENV[*]})"
(cd / && exec env -i "${image_env[@]}" "${run_env[@]}" "${as_user[@]}" \
	"${ENTRYPOINT[@]}" "${COMMAND[@]}") >"$work/stdout" 2>"$work/daemon.log" &
daemon_pid=$!

# --- 4. the health check ----------------------------------------------------------------------------

probe() { env -i "${image_env[@]}" "${as_user[@]}" "$@"; }
healthy=""
for _ in $(seq 1 60); do
	if probe "${PROBE[@]}" >"$work/probe.out" 2>&1; then healthy=yes; break; fi
	kill -0 "$daemon_pid" 2>/dev/null || die "the daemon exited:"$'\n'"$(cat "$work/daemon.log")"
	sleep 0.5
done
[[ -n $healthy ]] || die "the HEALTHCHECK (${PROBE[*]}) never passed: $(cat "$work/probe.out")"$'\n'"$(cat "$work/daemon.log")"
note "healthy: ${PROBE[*]} -> $(cat "$work/probe.out")"

# The same command on /health (503: the brokers are absent) must fail, with status 1.
health_probe=("${PROBE[@]}")
if [[ ${health_probe[-1]} == /* ]]; then health_probe[-1]=/health; else health_probe+=(/health); fi
status=0
for _ in $(seq 1 40); do
	status=0
	probe "${health_probe[@]}" >"$work/probe.out" 2>&1 || status=$?
	[[ $status == 0 ]] || break
	sleep 0.5
done
[[ $status == 1 ]] || die "${health_probe[*]} exited $status on a 503: $(cat "$work/probe.out")"
note "unhealthy is reported: ${health_probe[*]} -> exit 1 ($(cat "$work/probe.out"))"

kill "-${STOP_SIGNAL:-TERM}" "$daemon_pid"
status=0
wait "$daemon_pid" || status=$?
daemon_pid=""
[[ $status == 0 ]] || die "SIG${STOP_SIGNAL:-TERM} stopped the daemon with status $status:"$'\n'"$(cat "$work/daemon.log")"
note "SIG${STOP_SIGNAL#SIG} stopped it with status 0"
status=0
probe "${PROBE[@]}" >"$work/probe.out" 2>&1 || status=$?
[[ $status == 1 ]] || die "the HEALTHCHECK exited $status with the daemon stopped: $(cat "$work/probe.out")"
note "a stopped daemon is unhealthy: exit 1 ($(cat "$work/probe.out"))"

if grep -qF "$secret_password" "$work/daemon.log" "$work/stdout"; then
	die "the daemon's log shows the Kafka password it read from a secret file"
fi
if [[ -n ${TXOUTBOX_POSTGRES_URL:-} ]]; then
	drop_schema
	password=$(sed -n 's|^[a-z]*://[^:/@]*:\([^@]*\)@.*|\1|p' <<<"$database_url")
	# The URL as written, password included (the password alone may be a common word).
	if [[ -n $password ]] && grep -qF ":$password@" "$work/daemon.log"; then
		die "the daemon's log shows the database URL with its password"
	fi
fi
grep -q 'sasl.password' "$work/daemon.log" \
	|| die "the daemon's log does not show the producer's settings (sasl.password, redacted): were the TXOUTBOX_KAFKA_PROPERTY_ variables read?"
note "no secret in the log (sasl.password, read from its file, is shown redacted)"
echo "image-check: passed (${PROFILE} build, $((SECONDS)) s)"
