# Shared by entrypoint.sh and handler.sh (sourced, busybox ash). No forks on the hot path.

# escape TEXT: sets REPLY to TEXT escaped for use inside a JSON string.
escape() {
    REPLY=${1//\\/\\\\}
    REPLY=${REPLY//\"/\\\"}
    REPLY=${REPLY//	/\\t}
}

# log SEVERITY MESSAGE [EXTRA]: one structured (Cloud Logging style) JSON line on the container's
# stdout. EXTRA is raw JSON that starts with a comma. Request handlers run with the socket on
# stdout, so they write to SAMPLE_LOG (the stdout of PID 1, set by entrypoint.sh) instead.
log() {
    escape "$2"
    if [ -n "$SAMPLE_LOG" ]; then
        printf '{"severity":"%s","message":"%s","service":"%s","revision":"%s"%s}\n' \
            "$1" "$REPLY" "$SAMPLE_SERVICE" "$SAMPLE_REVISION" "$3" >>"$SAMPLE_LOG"
    else
        printf '{"severity":"%s","message":"%s","service":"%s","revision":"%s"%s}\n' \
            "$1" "$REPLY" "$SAMPLE_SERVICE" "$SAMPLE_REVISION" "$3"
    fi
}

# centiseconds: sets REPLY to the system uptime in centiseconds (for uptime and latency).
centiseconds() {
    read -r REPLY _ </proc/uptime
    REPLY=${REPLY/./}
    REPLY=${REPLY#0}
}

# seconds CENTISECONDS: sets REPLY to "S.CC".
seconds() {
    REPLY="$(($1 / 100)).$(($1 % 100 / 10))$(($1 % 10))"
}
