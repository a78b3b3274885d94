#!/usr/bin/env bash
# bash_files/local_cluster/stop.sh - cancel all jobs of the local Slurm cluster, then stop
# exactly the daemons start.sh started (PIDs in $LOCAL_CLUSTER_DIR/pids). Daemons it did
# not start (e.g. a system munged it reused) are left alone.
exec bash "$(dirname "$(readlink -f "$0")")/start.sh" --stop "$@"
