#!/bin/sh
# The measurements of Tests/bench/board_footprint.py, run inside the board VM
# (busybox sh, from the initramfs's /init) and natively on x86_64 (/bin/sh).
# Prints raw /proc files between "@@begin NAME" and "@@end NAME" lines and
# facts as "@@kv KEY=VALUE"; the host script parses them.
#
# Environment: BIN (postern), TOOL (benchtool), WORK (a writable scratch dir),
# PORT (postern's SMTP port), UPORT (the sink's port), SETTLE (seconds after
# listening before the idle snapshot), IDLE_SECONDS (the idle window),
# MESSAGES, CLIENTS, SMALL, BIG (the loads), WATCHDOG_US (WatchdogSec in µs).
set -u

kv() { echo "@@kv $1"; }
section() {
    echo "@@begin $1"
    cat "$2"
    echo "@@end $1"
}
# A snapshot of the daemon's /proc files: NAME status io [smaps_rollup] [smaps].
snap() {
    name=$1
    shift
    echo "@@begin $name.uptime"
    cat /proc/uptime
    echo "@@end $name.uptime"
    for f in "$@"; do
        section "$name.$f" "/proc/$DAEMON/$f"
    done
}
fail() {
    echo "@@fail $*"
    exit 1
}

config() {   # config SPOOLDIR
    cat > "$WORK/postern.conf" <<EOF
# board footprint bench: loopback only; the spool is on $SPOOL_FS
[receiver]
listen = 127.0.0.1:$PORT
hostname = board.bench
max_message_size = 25M
[spool]
dir = $1
[upstream]
host = 127.0.0.1
port = $UPORT
tls = none
[retry]
initial = 5s
max = 1m
[control]
socket = $WORK/run/control
[local]
socket = $WORK/run/submit
EOF
    "$BIN" check-config --config "$WORK/postern.conf" > "$WORK/check-config.out" 2>&1 ||
        { cat "$WORK/check-config.out"; fail "check-config refused the configuration"; }
}

start_daemon() {   # start_daemon LOG; the caller sets the environment
    "$BIN" run --config "$WORK/postern.conf" --log stderr 2> "$1" &
    DAEMON=$!
    "$TOOL" wait-listen "$PORT" 120 || { cat "$1"; fail "postern did not listen"; }
    # The control socket is opened after the listener: wait for it too.
    tries=0
    while [ ! -S "$WORK/run/control" ] && [ $tries -lt 200 ]; do sleep 0.05; tries=$((tries + 1)); done
    kv "pid=$DAEMON"
}

stop_daemon() {
    kill -TERM "$DAEMON"
    wait "$DAEMON"
    kv "exit_$1=$?"
}

mkdir -p "$WORK/run"
kv "spool_fs=$SPOOL_FS"
kv "idle_seconds=$IDLE_SECONDS"
kv "settle_seconds=$SETTLE"
kv "watchdog_usec=$WATCHDOG_US"
kv "kernel=$(uname -r) $(uname -m)"

"$TOOL" sink "$UPORT" "$WORK/count" > "$WORK/sink.log" 2>&1 &
SINK=$!
"$TOOL" wait-listen "$UPORT" 30 || fail "the sink did not listen"

# ---- run 1: no watchdog -----------------------------------------------------
config "$WORK/spool1"
unset NOTIFY_SOCKET WATCHDOG_USEC WATCHDOG_PID
start_daemon "$WORK/log1"
sleep "$SETTLE"
snap idle status io smaps_rollup smaps
sleep "$IDLE_SECONDS"
snap idle_end status io

echo 5 > "/proc/$DAEMON/clear_refs"   # VmHWM := VmRSS, so each load has its own peak
"$TOOL" sample "$DAEMON" 50 > "$WORK/sample_small" &
SAMPLER=$!
"$TOOL" load "$PORT" "$CLIENTS" "$MESSAGES" "$SMALL" > "$WORK/load_small" 2>&1 || { cat "$WORK/load_small"; fail "small load"; }
"$TOOL" wait-count "$WORK/count" "$MESSAGES" 600 >> "$WORK/load_small" 2>&1 || { cat "$WORK/load_small"; fail "small load not delivered"; }
kill -TERM $SAMPLER
wait $SAMPLER
snap small status smaps_rollup
section small.sample "$WORK/sample_small"
section small.load "$WORK/load_small"

echo 5 > "/proc/$DAEMON/clear_refs"
"$TOOL" sample "$DAEMON" 50 > "$WORK/sample_big" &
SAMPLER=$!
"$TOOL" load "$PORT" 1 1 "$BIG" > "$WORK/load_big" 2>&1 || { cat "$WORK/load_big"; fail "big load"; }
"$TOOL" wait-count "$WORK/count" $((MESSAGES + 1)) 900 >> "$WORK/load_big" 2>&1 || { cat "$WORK/load_big"; fail "big message not delivered"; }
kill -TERM $SAMPLER
wait $SAMPLER
snap big status smaps_rollup
section big.sample "$WORK/sample_big"
section big.load "$WORK/load_big"

sleep "$SETTLE"   # the upstream connection is let go after 2 s idle
snap after status smaps_rollup smaps
stop_daemon run1
kv "log1_lines=$(wc -l < "$WORK/log1")"
kv "log1_received=$(grep -c 'event=received' "$WORK/log1")"
kv "log1_delivered=$(grep -c 'event=delivered' "$WORK/log1")"
echo "@@begin log1.tail"
tail -n 8 "$WORK/log1"
echo "@@end log1.tail"

# ---- run 2: with the watchdog, as postern.service runs it -------------------
"$TOOL" notify "$WORK/notify.sock" > "$WORK/notify.log" 2>&1 &
NOTIFY=$!
tries=0
while [ ! -S "$WORK/notify.sock" ] && [ $tries -lt 200 ]; do sleep 0.05; tries=$((tries + 1)); done
config "$WORK/spool2"
export NOTIFY_SOCKET="$WORK/notify.sock" WATCHDOG_USEC="$WATCHDOG_US"
start_daemon "$WORK/log2"
unset NOTIFY_SOCKET WATCHDOG_USEC
sleep "$SETTLE"
snap wd_idle status io smaps_rollup
before=$(grep -c 'WATCHDOG=1' "$WORK/notify.log")
sleep "$IDLE_SECONDS"
snap wd_idle_end status io
after=$(grep -c 'WATCHDOG=1' "$WORK/notify.log")
kv "wd_pings=$((after - before))"
stop_daemon run2
section notify.log "$WORK/notify.log"
kv "log2_lines=$(wc -l < "$WORK/log2")"

kill -TERM $NOTIFY $SINK
wait $NOTIFY $SINK 2>/dev/null
echo "@@done"
