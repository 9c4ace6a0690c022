#!/bin/sh
# probe.sh DIR [once]: looks up every pid in DIR/pids and prints `none left`,
# or `alive PID` / `zombie PID` for the last one found: once, or for each
# line on stdin.
look() {
  verdict="none left"
  for p in $(cat "$1/pids"); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    case $s in
      Z*|X*) verdict="zombie $p" ;;
      *) verdict="alive $p" ;;
    esac
  done
  echo "$verdict"
}
if [ "$2" = once ]; then
  look "$1"
  exit
fi
while read -r _; do look "$1"; done
