# One HTTP request: busybox nc runs this per connection with the socket on stdin/stdout.
# Routes: GET /health, GET /api/health (JSON health), GET / (200 text), GET /slow (200 after
# $SLOW_RESPONSE_S, default 2 s: holds a request slot), GET /openapi.json (the document
# $OPENAPI_VARIANT selected, read by entrypoint.sh; 404 without one), anything else 404.
. "${SAMPLE_APP_DIR:-/app}/lib.sh"
centiseconds; t0=$REPLY

IFS= read -r -t 10 line || exit 0
line=${line%$'\r'}
set -f
# shellcheck disable=SC2086
set -- $line
set +f
method=${1:-?}
target=${2:-/}
while IFS= read -r -t 5 header; do
    [ -z "${header%$'\r'}" ] && break
done
path=${target%%\?*}

respond() {  # respond STATUS REASON CONTENT_TYPE BODY
    if [ "$method" = HEAD ]; then body_out=; else body_out=$4; fi
    printf 'HTTP/1.1 %s %s\r\nContent-Type: %s\r\nContent-Length: %s\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n%s' \
        "$1" "$2" "$3" "${#4}" "$body_out"
    status=$1
}

reason() {
    case $1 in
        200) REPLY=OK ;; 201) REPLY=Created ;; 204) REPLY="No Content" ;; 404) REPLY="Not Found" ;;
        405) REPLY="Method Not Allowed" ;; 429) REPLY="Too Many Requests" ;;
        500) REPLY="Internal Server Error" ;; 502) REPLY="Bad Gateway" ;;
        503) REPLY="Service Unavailable" ;; 504) REPLY="Gateway Timeout" ;; *) REPLY=Status ;;
    esac
}

case "$method $path" in
    "GET /health" | "HEAD /health" | "GET /api/health" | "HEAD /api/health")
        centiseconds; elapsed=$((REPLY - SAMPLE_STARTED_CS)); seconds $elapsed; uptime=$REPLY
        code=$HEALTH_HTTP_STATUS
        if [ "${HEALTH_FAIL_AFTER_S:-0}" != 0 ] && [ "$elapsed" -ge $((HEALTH_FAIL_AFTER_S * 100)) ]; then
            code=500  # a dependency lost after N seconds: the app logs why as it answers
            log ERROR "health check failed: database connection refused (db-primary:5432)"
        fi
        reason "$code"
        respond "$code" "$REPLY" application/json \
            "{\"status\":\"$HEALTH_STATUS\",\"service\":\"$SAMPLE_SERVICE\",\"revision\":\"$SAMPLE_REVISION\",\"uptime_s\":$uptime}"
        ;;
    "GET /slow")
        sleep "${SLOW_RESPONSE_S:-2}"
        respond 200 OK "text/plain; charset=utf-8" "slow answer
"
        ;;
    "GET /openapi.json" | "HEAD /openapi.json")
        if [ -n "${OPENAPI_BODY:-}" ]; then
            respond 200 OK application/json "$OPENAPI_BODY"
        else
            respond 404 "Not Found" application/json '{"error":"no API document"}'
        fi
        ;;
    "GET /" | "HEAD /")
        respond 200 OK "text/plain; charset=utf-8" "$SAMPLE_SERVICE $SAMPLE_REVISION: hello from the stagecheck sample service
"
        ;;
    *" /health" | *" /api/health" | *" /")
        respond 405 "Method Not Allowed" application/json '{"error":"method not allowed"}'
        ;;
    *)
        respond 404 "Not Found" application/json '{"error":"not found"}'
        ;;
esac

centiseconds; seconds $((REPLY - t0)); latency=$REPLY
case $status in 5??) severity=ERROR ;; 4??) severity=WARNING ;; *) severity=INFO ;; esac
escape "$method"; m=$REPLY
escape "$target"; u=$REPLY
log "$severity" "$method $target $status" \
    ",\"httpRequest\":{\"requestMethod\":\"$m\",\"requestUrl\":\"$u\",\"status\":$status,\"latency\":\"${latency}s\"}"
