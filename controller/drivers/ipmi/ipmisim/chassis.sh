#!/bin/sh
# Chassis program for OpenIPMI's ipmi_sim (lan.conf "chassis_control").
# Usage: chassis.sh STATEDIR get power [boot] | set KEY VALUE [KEY VALUE...]
# It records the simulated machine's state in files under STATEDIR:
#   power     0|1
#   boot      pxe|default|cdrom|bios|none (as ipmi_sim hands it over)
#   identify  last "set identify" value ("<interval> <force>")
#   softoff_at  epoch ms at which a pending ACPI soft-off takes effect
#   calls     one line per invocation (for tests)
# Knobs (files, read on every call): delay (seconds to sleep per call, a slow
# BMC), softoff_delay_ms (ACPI soft-off latency; -1 = the OS ignores ACPI).
# ipmi_sim popen()s this program and blocks until it exits: keep it fast.
d=$1; shift
now_ms() { echo $(( $(date +%s%N) / 1000000 )); }
[ -s "$d/delay" ] && sleep "$(cat "$d/delay")"
echo "$*" >> "$d/calls"
# Apply a pending soft-off whose time has come.
if [ -s "$d/softoff_at" ]; then
  at=$(cat "$d/softoff_at")
  if [ "$(now_ms)" -ge "$at" ]; then
    echo 0 > "$d/power.tmp" && mv "$d/power.tmp" "$d/power"
    rm -f "$d/softoff_at"
  fi
fi
setf() { echo "$2" > "$d/$1.tmp" && mv "$d/$1.tmp" "$d/$1"; }
op=$1; shift
case "$op" in
get)
  for p in "$@"; do
    case "$p" in
      power) echo "power:$(cat "$d/power" 2>/dev/null || echo 0)";;
      boot) echo "boot:$(cat "$d/boot" 2>/dev/null || echo default)";;
    esac
  done;;
set)
  while [ $# -ge 2 ]; do
    k=$1; v=$2; shift 2
    case "$k" in
      power)
        rm -f "$d/softoff_at"
        setf power "$v";;
      reset) ;;
      shutdown)
        sd=$(cat "$d/softoff_delay_ms" 2>/dev/null || echo 0)
        if [ "$(cat "$d/power" 2>/dev/null || echo 0)" = 1 ] && [ "$sd" -ge 0 ]; then
          if [ "$sd" -eq 0 ]; then setf power 0; else setf softoff_at $(( $(now_ms) + sd )); fi
        fi;;
      boot) setf boot "$v";;
      identify) setf identify "$v";;
      *) exit 1;;
    esac
  done;;
*) exit 1;;
esac
exit 0
