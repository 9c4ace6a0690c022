#!/bin/sh
# daemon.sh KIND DIR AFTER
#
# Leaves behind processes that left this one's process group, the way KIND
# does, appends their pids to DIR/pids, prints `left PIDS`, then does AFTER:
# `stay` (sleep), `fail` (exit 1; run again, it prints `again` and stays),
# or `done` (exit 0). The processes it leaves close their stdio, as daemons
# do, so nothing holds this one's pipes open.
#
#   setsid          a grandchild in a session of its own (`setsid cmd &`)
#   double-fork     the same from a subshell that exits at once: the
#                   grandchild re-parents while this one still runs
#   reparent-twice  a daemon (re-parented once) that starts another from a
#                   subshell that exits (re-parented again); both stay
kind=$1 dir=$2 after=$3
if [ "$after" = fail ] && [ -e "$dir/pids" ]; then
  echo again
  exec sleep 1000
fi
fifo=$dir/fifo.$$
mkfifo "$fifo"
# The last one left writes `[MIDDLE] ITSELF` to the fifo, then sleeps.
leaf='echo "$1 $$" > "$0"; exec sleep 1000 </dev/null >/dev/null 2>&1'
case $kind in
  setsid) setsid sh -c "$leaf" "$fifo" "" </dev/null >/dev/null 2>&1 & ;;
  double-fork) (setsid sh -c "$leaf" "$fifo" "" </dev/null >/dev/null 2>&1 &) ;;
  reparent-twice)
    (setsid sh -c '(sh -c "$1" "$0" $$ &); exec sleep 1000' "$fifo" "$leaf" \
      </dev/null >/dev/null 2>&1 &) ;;
  *) echo "unknown kind $kind" >&2; exit 2 ;;
esac
read -r pids < "$fifo"
rm -f "$fifo"
echo $pids >> "$dir/pids"
echo "left $pids"
case $after in
  stay) exec sleep 1000 ;;
  fail|crash) exit 1 ;;
  done) exit 0 ;;
esac
