#!/bin/sh
# Make N hosts on this machine to run a moldau cluster on, as the course lays it out on
# separate machines: each host is a network namespace <prefix>-hI with its own address
# 10.213.0.I on a private bridge, and nothing reaches them from outside (no default route).
# The logic lives in tests/netns.py, the same code the multi-host tests use. Needs root.
#
#   deploy/local-hosts.sh up 6            # hosts moldau-h1..h6 (replaces earlier ones)
#   deploy/local-hosts.sh status          # hosts and addresses
#   deploy/local-hosts.sh exec 1 moldau-metadata --host 10.213.0.1 --port 2181 --data-dir /tmp/md1
#   deploy/local-hosts.sh exec 2 moldau-broker --broker-id 1 --listeners 10.213.0.2:9092 \
#       --log-dirs /tmp/b1 --zookeeper 10.213.0.1:2181
#   deploy/local-hosts.sh exec 6          # a shell on host 6 (a client machine)
#   deploy/local-hosts.sh cut 2           # unplug host 2 from the network; heal 2 undoes it
#   deploy/local-hosts.sh down            # kill everything on the hosts and remove them
#
# MOLDAU_HOSTS_PREFIX changes the name prefix (default moldau); PYTHON the interpreter
# (default the checkout's .venv, else python3).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
prefix=${MOLDAU_HOSTS_PREFIX:-moldau}
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$root/.venv/bin/python" ]; then PYTHON=$root/.venv/bin/python; else PYTHON=python3; fi
fi
# the checkout's venv on PATH, so `exec I moldau-broker ...` finds the commands inside a host
if [ -d "$root/.venv/bin" ]; then PATH=$root/.venv/bin:$PATH; export PATH; fi

usage() {
    echo "usage: $0 up N | down [N] | status | exec I [CMD...] | cut I | heal I" >&2
    exit 2
}

netns() { exec "$PYTHON" "$root/tests/netns.py" --prefix "$prefix" "$@"; }

[ $# -ge 1 ] || usage
cmd=$1
shift
case $cmd in
    up)     [ $# -eq 1 ] || usage; netns up "$1" ;;
    down)   [ $# -le 1 ] || usage; netns down ;;
    status) [ $# -eq 0 ] || usage; netns status ;;
    exec)   [ $# -ge 1 ] || usage; netns exec "$@" ;;
    cut|heal) [ $# -eq 1 ] || usage; netns "$cmd" "$1" ;;
    *)      usage ;;
esac
