# The sample service's PID 1 (busybox ash). Validates the environment, serves HTTP on
# 127.0.0.1:$PORT through `busybox nc -ll -e handler.sh` (one handler per connection, concurrent),
# and simulates the failures stagecheck must detect. Environment: see README.md.
. "${SAMPLE_APP_DIR:-/app}/lib.sh"

escape "${K_SERVICE:-sample-service}"; export SAMPLE_SERVICE=$REPLY
escape "${K_REVISION:-local}"; export SAMPLE_REVISION=$REPLY
centiseconds; export SAMPLE_STARTED_CS=$REPLY

fail() {  # fail MESSAGE: log an ERROR line and exit non-zero
    log ERROR "$1"
    exit 2
}

is_number() {  # non-negative decimal such as 0, 2 or 0.5
    case $1 in '' | *[!0-9.]* | *.*.* | .) return 1 ;; esac
}

case ${PORT:-} in
    '' | *[!0-9]*) fail "PORT must be set to a TCP port number (got '${PORT:-}')" ;;
esac
[ "$PORT" -ge 1 ] && [ "$PORT" -le 65535 ] || fail "PORT out of range: $PORT"
export HEALTH_STATUS=${HEALTH_STATUS:-healthy}
case $HEALTH_STATUS in healthy | degraded) ;; *) fail "HEALTH_STATUS must be healthy or degraded (got '$HEALTH_STATUS')" ;; esac
export HEALTH_HTTP_STATUS=${HEALTH_HTTP_STATUS:-200}
case $HEALTH_HTTP_STATUS in [1-5][0-9][0-9]) ;; *) fail "HEALTH_HTTP_STATUS must be an HTTP status code (got '$HEALTH_HTTP_STATUS')" ;; esac
for name in STARTUP_DELAY_S CRASH_AFTER_S ERROR_RATE ERROR_AFTER_S TRACEBACK_EVERY_S; do
    eval "value=\${$name:-0}"
    is_number "$value" || fail "$name must be a non-negative number (got '$value')"
done
case ${HEALTH_FAIL_AFTER_S:-0} in
    *[!0-9]*) fail "HEALTH_FAIL_AFTER_S must be a whole number of seconds (got '$HEALTH_FAIL_AFTER_S')" ;;
esac

# OPENAPI_VARIANT=name: GET /openapi.json serves /app/openapi/name.json (read once, here)
if [ -n "${OPENAPI_VARIANT:-}" ]; then
    case $OPENAPI_VARIANT in *[!a-z0-9-]*) fail "OPENAPI_VARIANT must be a name of lowercase letters, digits and hyphens (got '$OPENAPI_VARIANT')" ;; esac
    document="${SAMPLE_APP_DIR:-/app}/openapi/$OPENAPI_VARIANT.json"
    [ -f "$document" ] || fail "OPENAPI_VARIANT: no document $OPENAPI_VARIANT.json in ${SAMPLE_APP_DIR:-/app}/openapi"
    OPENAPI_BODY=$(cat "$document")
    export OPENAPI_BODY
fi

if [ "${CRASH_ON_START:-0}" = 1 ]; then
    # What a Python service that cannot import a dependency prints before dying.
    cat >&2 <<'TRACEBACK'
Traceback (most recent call last):
  File "/app/main.py", line 7, in <module>
    from payments import client as payments_client
ModuleNotFoundError: No module named 'payments'
TRACEBACK
    exit 1
fi

children=
on_term() {
    if [ "${SHUTDOWN_STYLE:-}" = npm ]; then
        # what `npm start` prints when Cloud Run stops the instance (SIGTERM), then exit(143)
        printf 'npm error path /app\nnpm error command failed\nnpm error signal SIGTERM\nnpm error command sh -c node server.js\n' >&2
        [ -n "$children" ] && kill $children 2>/dev/null
        exit 143
    fi
    log INFO "received SIGTERM, shutting down"
    [ -n "$children" ] && kill $children 2>/dev/null
    exit 0
}
on_crash() {
    cat >&2 <<'TRACEBACK'
Traceback (most recent call last):
  File "/app/worker.py", line 42, in run
    conn = pool.acquire(timeout=3.0)
RuntimeError: connection pool exhausted
TRACEBACK
    log CRITICAL "worker crashed: RuntimeError: connection pool exhausted; exiting"
    [ -n "$children" ] && kill $children 2>/dev/null
    exit 1
}
trap on_term TERM INT
trap on_crash USR1

log INFO "starting ${K_SERVICE:-sample-service} revision ${K_REVISION:-local} (port $PORT, startup delay ${STARTUP_DELAY_S:-0}s)"

if [ "${CRASH_AFTER_S:-0}" != 0 ]; then
    (sleep "$CRASH_AFTER_S" && kill -USR1 $$) &
    children="$children $!"
fi

if [ "${STARTUP_DELAY_S:-0}" != 0 ]; then
    sleep "$STARTUP_DELAY_S" &
    wait $!
fi

error_loop() {  # ERROR_RATE lines per second after ERROR_AFTER_S; {n} and {id} in ERROR_MESSAGE vary per line
    interval=$(awk "BEGIN { printf \"%.3f\", 1 / $ERROR_RATE }")
    [ "${ERROR_AFTER_S:-0}" != 0 ] && sleep "$ERROR_AFTER_S"
    default_message='payment backend timeout after {n} ms (request id {id})'
    escape "${ERROR_MESSAGE:-$default_message}"
    template=$REPLY
    while :; do
        id=$(printf '%04x%02x' $RANDOM $((RANDOM % 256)))
        message=${template//\{n\}/$((1000 + RANDOM % 4000))}
        message=${message//\{id\}/$id}
        printf '{"severity":"ERROR","message":"%s","service":"%s","revision":"%s"}\n' \
            "$message" "$SAMPLE_SERVICE" "$SAMPLE_REVISION"
        sleep "$interval"
    done
}
if [ "${ERROR_RATE:-0}" != 0 ]; then
    error_loop &
    children="$children $!"
fi

traceback_loop() {  # a handled exception every TRACEBACK_EVERY_S: a Python traceback on stderr, one line each
    while :; do
        sleep "$TRACEBACK_EVERY_S"
        cat >&2 <<'TRACEBACK'
Traceback (most recent call last):
  File "/app/orders.py", line 88, in handle
    total = price_of(order)
  File "/app/pricing.py", line 21, in price_of
    return DISCOUNTS[order["discount_code"]]
KeyError: 'discount_code'
TRACEBACK
    done
}
if [ "${TRACEBACK_EVERY_S:-0}" != 0 ]; then
    traceback_loop &
    children="$children $!"
fi

# `nc -ll -e` is a persistent server forking one handler per connection; its listen backlog is
# the number of l's, and the default 2 makes bursts of concurrent probes time out: use 128.
listen=-
while [ ${#listen} -le 128 ]; do listen=${listen}l; done
SAMPLE_LOG=/proc/$$/fd/1 busybox nc "$listen" -p "$PORT" 127.0.0.1 -e /bin/busybox sh "${SAMPLE_APP_DIR:-/app}/handler.sh" &
server=$!
children="$children $server"
log INFO "listening on 127.0.0.1:$PORT"
wait $server
status=$?
log ERROR "HTTP server exited with status $status"
[ -n "$children" ] && kill $children 2>/dev/null
exit 1
