#!/usr/bin/env bash
# bash_files/local_cluster/start.sh - a REAL single-node Slurm cluster plus a loopback sshd,
# to try bash_files/run_remote.sh on one machine and to test it in CI (Debian 12, run as
# root, no systemd). Afterwards 'ssh localcluster' reaches this machine, so settings with
#   SSH_HOST=localcluster  SCHEDULER=slurm  REMOTE_DIR=/tmp/mtl-remote
# submit real job arrays here. (The project's copy of the recipe in shared/cluster/.)
#
# Starts, directly in the background (no systemd): munged, slurmctld, slurmd,
# sshd on 127.0.0.1:$LOCAL_CLUSTER_SSH_PORT and, with --with-accounting,
# mariadbd + slurmdbd so that `sacct` works. Installs missing Debian packages.
#
# Idempotent: a re-run keeps healthy daemons, restarts only those whose config
# changed, starts missing ones, then waits until everything answers.
# Progress goes to stderr; stdout carries only `export VAR=...` lines, so
#   eval "$(bash bash_files/local_cluster/start.sh)"
# sets the variables in the caller (they are also written to $LOCAL_CLUSTER_DIR/env).
#
# Usage: bash bash_files/local_cluster/start.sh [--self-test] [--with-accounting] [--stop] [--help]
#        bash bash_files/local_cluster/stop.sh      (= start.sh --stop)
#   --self-test        after start: sbatch array, squeue, srun, scancel, (sacct), ssh, rsync
#   --with-accounting  also run MariaDB + slurmdbd (sacct/sacctmgr work); ~+15 s
#   --stop             cancel all jobs and stop exactly the daemons this script started
#
# Environment knobs (all optional):
#   LOCAL_CLUSTER_DIR         state/log dir                      [/var/lib/local-cluster]
#   LOCAL_CLUSTER_SSH_ALIAS   ~/.ssh/config Host name(s)         [localcluster]
#                             (several allowed, e.g. "localcluster localhost")
#   LOCAL_CLUSTER_SSH_PORT    sshd port on 127.0.0.1             [2222]
#   LOCAL_CLUSTER_SSH_PATH    PATH inside ssh sessions           [sshd's default PATH]
#   LOCAL_CLUSTER_PARTITION   name of the (default) partition    [debug]
#   LOCAL_CLUSTER_TIMEOUT     seconds to wait for each daemon    [60]
#   LOCAL_CLUSTER_ACCOUNTING  1 = same as --with-accounting      [0]
#   LOCAL_CLUSTER_DB_PORT     MariaDB port on 127.0.0.1          [3307]
set -euo pipefail

: "${LOCAL_CLUSTER_DIR:=/var/lib/local-cluster}"
: "${LOCAL_CLUSTER_SSH_ALIAS:=localcluster}"
: "${LOCAL_CLUSTER_SSH_PORT:=2222}"
: "${LOCAL_CLUSTER_SSH_PATH:=}"
: "${LOCAL_CLUSTER_PARTITION:=debug}"
: "${LOCAL_CLUSTER_TIMEOUT:=60}"
: "${LOCAL_CLUSTER_ACCOUNTING:=0}"
: "${LOCAL_CLUSTER_DB_PORT:=3307}"

SELF_TEST=0 MODE=start
for arg in "$@"; do
  case "$arg" in
    --self-test) SELF_TEST=1 ;;
    --with-accounting) LOCAL_CLUSTER_ACCOUNTING=1 ;;
    --stop) MODE=stop ;;
    -h|--help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

D=$LOCAL_CLUSTER_DIR
PIDS=$D/pids                  # one line per daemon we started: NAME PID CONFIG-HASH
LOG=$D/log RUN=$D/run SSH_DIR=$D/ssh DB_DIR=$D/mysql
SLURM_CONF=/etc/slurm/slurm.conf         # compiled-in default: clients need no SLURM_CONF
SLURMDBD_CONF=/etc/slurm/slurmdbd.conf
MUNGE_KEY=/etc/munge/munge.key
CLIENT_KEY=$HOME/.ssh/local_cluster_ed25519
ALIAS1=${LOCAL_CLUSTER_SSH_ALIAS%% *}    # first alias, used for checks
START_TS=$SECONDS

log() { printf '[local-cluster %3ds] %s\n' $((SECONDS - START_TS)) "$*" >&2; }
die() {   # die MESSAGE [LOGFILE...]: print the message and the tail of each log, exit 1
  local msg=$1 f; shift
  echo "[local-cluster] ERROR: $msg" >&2
  for f in "$@"; do [[ -f $f ]] && { echo "----- last lines of $f -----" >&2; tail -n 25 "$f" >&2; }; done
  exit 1
}

# NOTE: the files this script writes (slurm.conf, sshd_config, the ~/.ssh/config block)
# are byte-identical to those of shared/cluster/start-local-cluster.sh, so either script
# finds the other's cluster healthy and restarts nothing.

# ---------------------------------------------------------------- pid bookkeeping
# A daemon counts as "ours and alive" only if the recorded PID still runs a
# process whose name (/proc/PID/comm) is the daemon's name, so a reused PID is
# never mistaken for ours (and never killed).
pid_get()  { if [[ -f $PIDS ]]; then awk -v n="$1" '$1==n {p=$2} END {print p}' "$PIDS" || true; fi; }
hash_get() { if [[ -f $PIDS ]]; then awk -v n="$1" '$1==n {h=$3} END {print h}' "$PIDS" || true; fi; }
pid_del()  { [[ -f $PIDS ]] || return 0; awk -v n="$1" '$1!=n' "$PIDS" >"$PIDS.tmp"; mv "$PIDS.tmp" "$PIDS"; }
pid_set()  { pid_del "$1"; echo "$1 $2 $3" >>"$PIDS"; }
alive() {  # alive NAME
  local pid; pid=$(pid_get "$1")
  [[ -n $pid && -r /proc/$pid/comm && $(cat "/proc/$pid/comm" 2>/dev/null) == "$1" ]] || return 1
  [[ $(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) != Z ]]   # a zombie is dead
}
stop_daemon() {  # stop_daemon NAME: SIGTERM our recorded PID, SIGKILL after 20 s
  local name=$1 pid i
  if alive "$name"; then
    pid=$(pid_get "$name"); log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do alive "$name" || break; sleep 0.2; done
    if alive "$name"; then log "$name did not exit, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; sleep 0.5; fi
  fi
  pid_del "$name"
}
# launch NAME HASH LOGFILE CMD...: run a foreground-mode daemon detached (own
# session, stdio to LOGFILE, nothing inherited from the caller) and record it.
launch() {
  local name=$1 hash=$2 logf=$3; shift 3
  echo "=== $(date '+%F %T') starting: $*" >>"$logf"
  setsid "$@" </dev/null >>"$logf" 2>&1 &
  local pid=$!    # setsid execs (no fork) because a script's background job is no group leader
  pid_set "$name" "$pid" "$hash"
  sleep 0.3
  alive "$name" || die "$name exited right after start" "$logf"
  log "started $name (pid $pid)"
}
file_hash() { cat "$@" 2>/dev/null | sha256sum | cut -c1-16; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }   # something listens on 127.0.0.1:PORT
# wait_until [-d DAEMON] SECONDS DESCRIPTION LOGFILE CMD...: poll CMD until it succeeds;
# with -d, fail at once if that daemon (when started by us) has died.
wait_until() {
  local _dmn=''; [[ $1 == -d ]] && { _dmn=$2; shift 2; }
  local _secs=$1 _what=$2 _logf=$3 _end; shift 3; _end=$((SECONDS + _secs))
  until "$@" >/dev/null 2>&1; do
    if [[ -n $_dmn && -n $(pid_get "$_dmn") ]] && ! alive "$_dmn"; then
      die "$_dmn died while waiting for $_what" "$_logf"
    fi
    ((SECONDS < _end)) || die "timed out after ${_secs}s waiting for $_what" "$_logf"
    sleep 0.5
  done
}
# write_if_changed FILE MODE: replace FILE with stdin only if the content differs
write_if_changed() {
  local f=$1 mode=$2 tmp; tmp=$(mktemp)
  cat >"$tmp"
  if [[ -f $f ]] && cmp -s "$tmp" "$f"; then rm -f "$tmp"; else install -m "$mode" "$tmp" "$f"; rm -f "$tmp"; fi
}

# ---------------------------------------------------------------- stop mode
cancel_all_jobs() {  # jobs left running would outlive slurmd (slurmstepd detaches)
  alive slurmctld || return 0
  local jobs i; jobs=$(squeue -h -o %F 2>/dev/null | sort -u) || return 0
  [[ -n $jobs ]] || return 0
  local ids; mapfile -t ids <<<"$jobs"
  log "cancelling jobs: ${ids[*]}"
  scancel "${ids[@]}" 2>/dev/null || true
  for ((i = 0; i < 60; i++)); do [[ -z $(squeue -h 2>/dev/null) ]] && break; sleep 0.5; done
}
stop_all() {
  cancel_all_jobs
  local d; for d in sshd slurmd slurmctld slurmdbd mariadbd munged; do stop_daemon "$d"; done
  log "stopped"
}
[[ $(id -u) == 0 ]] || die "must run as root"
if [[ $MODE == stop ]]; then stop_all; exit 0; fi

# ---------------------------------------------------------------- 1. packages
PKGS=(munge slurmctld slurmd slurm-client openssh-server openssh-client rsync)
[[ $LOCAL_CLUSTER_ACCOUNTING == 1 ]] && PKGS+=(slurmdbd mariadb-server mariadb-client)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  mkdir -p "$LOG"
  log "installing: ${missing[*]} (log: $LOG/apt.log)"
  # Keep package scripts from starting system services (Docker-style policy-rc.d).
  own_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; own_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >>"$LOG/apt.log" 2>&1 \
    || { ((own_policy)) && rm -f /usr/sbin/policy-rc.d; die "apt-get install failed" "$LOG/apt.log"; }
  ((own_policy)) && rm -f /usr/sbin/policy-rc.d
fi

mkdir -p "$LOG" "$RUN" "$SSH_DIR" "$D/slurmctld" "$D/slurmd"
chmod 711 "$D"    # traversable (the mysql user needs $DB_DIR), not listable

# ---------------------------------------------------------------- 2. munge
if [[ ! -s $MUNGE_KEY ]]; then
  log "creating munge key $MUNGE_KEY"
  mkdir -p /etc/munge
  mungekey --create --keyfile="$MUNGE_KEY" --force
fi
chown munge:munge /etc/munge "$MUNGE_KEY"; chmod 700 /etc/munge; chmod 600 "$MUNGE_KEY"
mkdir -p /run/munge /var/lib/munge /var/log/munge
chown munge:munge /run/munge /var/lib/munge /var/log/munge; chmod 755 /run/munge
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
MUNGE_HASH=$(file_hash "$MUNGE_KEY")
if alive munged && [[ $(hash_get munged) != "$MUNGE_HASH" ]]; then stop_daemon munged; fi   # key changed
if alive munged || munge_ok; then
  alive munged || log "using an already running munged (not started by this script)"
else
  # --force: replace a stale socket left by a dead munged (none is answering).
  launch munged "$MUNGE_HASH" "$LOG/munged.log" \
    setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground --force
fi
wait_until -d munged "$LOCAL_CLUSTER_TIMEOUT" "munged to answer" "$LOG/munged.log" munge_ok

# ---------------------------------------------------------------- 3. accounting (optional)
ACCT_CONF="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
if [[ $LOCAL_CLUSTER_ACCOUNTING == 1 ]]; then
  # Private MariaDB: own datadir, no /etc/mysql config, TCP on 127.0.0.1 only; socket/pid
  # inside the datadir (mariadbd runs as user mysql). Pool size: slurmdbd warns below ~1G
  # (memory is only touched as used: ~125 MB RSS here).
  DB_SOCK=$DB_DIR/mysqld.sock
  DB_ARGS=(--no-defaults --user=mysql --datadir="$DB_DIR" --socket="$DB_SOCK" --pid-file="$DB_DIR/mariadbd.pid"
           --bind-address=127.0.0.1 --port="$LOCAL_CLUSTER_DB_PORT" --innodb-buffer-pool-size=1G --innodb-log-file-size=64M
           --innodb-lock-wait-timeout=900 --skip-name-resolve)
  DB_HASH=$(echo "${DB_ARGS[*]}" | sha256sum | cut -c1-16)
  if alive mariadbd && [[ $(hash_get mariadbd) != "$DB_HASH" ]]; then stop_daemon slurmdbd; stop_daemon mariadbd; fi
  if ! alive mariadbd; then
    if [[ ! -d $DB_DIR/mysql ]]; then
      log "initialising MariaDB data dir $DB_DIR"
      rm -rf "$DB_DIR"; mkdir -p "$DB_DIR"; chown mysql:mysql "$DB_DIR"; chmod 700 "$DB_DIR"
      mariadb-install-db --no-defaults --user=mysql --datadir="$DB_DIR" --auth-root-authentication-method=socket \
        --skip-test-db >>"$LOG/mariadb.log" 2>&1 || die "mariadb-install-db failed" "$LOG/mariadb.log"
    fi
    port_busy "$LOCAL_CLUSTER_DB_PORT" && die "port $LOCAL_CLUSTER_DB_PORT is taken (set LOCAL_CLUSTER_DB_PORT)"
    launch mariadbd "$DB_HASH" "$LOG/mariadb.log" /usr/sbin/mariadbd "${DB_ARGS[@]}"
  fi
  wait_until -d mariadbd "$LOCAL_CLUSTER_TIMEOUT" "MariaDB" "$LOG/mariadb.log" mariadb-admin --no-defaults --socket="$DB_SOCK" ping
  mariadb --no-defaults --socket="$DB_SOCK" -uroot -e "
    CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "could not create the slurm DB user"

  write_if_changed "$SLURMDBD_CONF" 600 <<EOF
# Managed by start-local-cluster.sh - rewritten on every run.
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
PidFile=$RUN/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$LOCAL_CLUSTER_DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  DBD_HASH=$(file_hash "$SLURMDBD_CONF")
  if alive slurmdbd && [[ $(hash_get slurmdbd) != "$DBD_HASH" ]]; then stop_daemon slurmdbd; fi
  if ! alive slurmdbd; then
    port_busy 6819 && die "port 6819 (slurmdbd) is taken by a process not started by this script"
    launch slurmdbd "$DBD_HASH" "$LOG/slurmdbd.log" /usr/sbin/slurmdbd -D
  fi
  wait_until -d slurmdbd "$LOCAL_CLUSTER_TIMEOUT" "slurmdbd" "$LOG/slurmdbd.log" port_busy 6819
  ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
else
  stop_daemon slurmdbd; stop_daemon mariadbd    # accounting switched off: stop ours, if any
fi

# ---------------------------------------------------------------- 4. slurm.conf
# NodeName/CPUs/sockets/cores/RealMemory are exactly what slurmd detects (slurmd -C),
# so the node never drains for "low resources". NodeAddr pins traffic to loopback.
NODE_LINE=$(slurmd -C | head -n1)
NODE=$(sed -n 's/^NodeName=\([^ ]*\).*/\1/p' <<<"$NODE_LINE")
[[ -n $NODE ]] || die "could not read the node name from 'slurmd -C': $NODE_LINE"
mkdir -p /etc/slurm
write_if_changed "$SLURM_CONF" 644 <<EOF
# Managed by start-local-cluster.sh - rewritten on every run.
ClusterName=local
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmctldPort=6817
SlurmdPort=6818
AuthType=auth/munge
StateSaveLocation=$D/slurmctld
SlurmdSpoolDir=$D/slurmd
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd.pid
# No cgroups: track job processes via /proc, no CPU binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
MailProg=/bin/true
SchedulerType=sched/backfill
# Schedule batch jobs at submit time (default delays up to 3 s): much faster CI turnaround.
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
KillWait=5
MinJobAge=300
InactiveLimit=0
$ACCT_CONF
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG/jobcomp.log
$NODE_LINE NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=$LOCAL_CLUSTER_PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
SLURM_HASH=$(file_hash "$SLURM_CONF")
if [[ $LOCAL_CLUSTER_ACCOUNTING == 1 ]] && ! sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx local; then
  # Register the cluster in the accounting DB once (needs the slurm.conf above).
  sacctmgr -i add cluster local >>"$LOG/slurmdbd.log" 2>&1 || die "sacctmgr add cluster failed" "$LOG/slurmdbd.log"
fi

# ---------------------------------------------------------------- 5. slurmctld + slurmd
if alive slurmctld && [[ $(hash_get slurmctld) != "$SLURM_HASH" ]]; then
  log "slurm.conf changed: restarting Slurm"; cancel_all_jobs; stop_daemon slurmd; stop_daemon slurmctld
fi
if alive slurmd && [[ $(hash_get slurmd) != "$SLURM_HASH" ]]; then stop_daemon slurmd; fi
if ! alive slurmctld; then
  port_busy 6817 && die "port 6817 (slurmctld) is taken by a process not started by this script"
  # -c: start from a clean state (no jobs left from an earlier run).
  launch slurmctld "$SLURM_HASH" "$LOG/slurmctld.log" /usr/sbin/slurmctld -D -c
fi
wait_until -d slurmctld "$LOCAL_CLUSTER_TIMEOUT" "slurmctld to answer" "$LOG/slurmctld.log" scontrol ping
if ! alive slurmd; then
  port_busy 6818 && die "port 6818 (slurmd) is taken by a process not started by this script"
  launch slurmd "$SLURM_HASH" "$LOG/slurmd.log" /usr/sbin/slurmd -D -N "$NODE"
fi
node_state() { sinfo -h -N -n "$NODE" -o %t 2>/dev/null; }
node_ready() { [[ $(node_state) =~ ^(idle|mix|alloc|comp)$ ]]; }
end=$((SECONDS + LOCAL_CLUSTER_TIMEOUT))
until node_ready; do
  alive slurmctld || die "slurmctld died" "$LOG/slurmctld.log"
  alive slurmd || die "slurmd died" "$LOG/slurmd.log"
  # A drained/down node (e.g. left from an earlier crash) is put back into service once.
  if [[ $(node_state) =~ ^(drain|drng|down|fail)$ && -z ${resumed:-} ]]; then
    resumed=1; scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true
  fi
  ((SECONDS < end)) || die "node $NODE not idle after ${LOCAL_CLUSTER_TIMEOUT}s (state: '$(node_state)'; \
$(scontrol show node "$NODE" 2>/dev/null | grep -o 'Reason=.*' || true))" "$LOG/slurmctld.log" "$LOG/slurmd.log"
  sleep 0.5
done
log "slurm node $NODE is $(node_state) (partition $LOCAL_CLUSTER_PARTITION)"

# ---------------------------------------------------------------- 6. sshd on 127.0.0.1
[[ -f $SSH_DIR/ssh_host_ed25519_key ]] || ssh-keygen -q -t ed25519 -N '' -C local-cluster-host -f "$SSH_DIR/ssh_host_ed25519_key"
mkdir -p "$HOME/.ssh" /run/sshd; chmod 700 "$HOME/.ssh"
[[ -f $CLIENT_KEY ]] || ssh-keygen -q -t ed25519 -N '' -C local-cluster-client -f "$CLIENT_KEY"
# Authorize the client key (loopback only).
AUTH_LINE="from=\"127.0.0.1,::1\" $(cat "$CLIENT_KEY.pub")"
touch "$HOME/.ssh/authorized_keys"; chmod 600 "$HOME/.ssh/authorized_keys"
grep -qxF "$AUTH_LINE" "$HOME/.ssh/authorized_keys" || echo "$AUTH_LINE" >>"$HOME/.ssh/authorized_keys"
write_if_changed "$SSH_DIR/sshd_config" 600 <<EOF
# Managed by start-local-cluster.sh - private sshd, keys only, loopback only.
Port $LOCAL_CLUSTER_SSH_PORT
ListenAddress 127.0.0.1
HostKey $SSH_DIR/ssh_host_ed25519_key
PidFile $RUN/sshd.pid
AuthenticationMethods publickey
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
PrintMotd no
MaxStartups 64:30:256
MaxSessions 64
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
${LOCAL_CLUSTER_SSH_PATH:+SetEnv PATH=$LOCAL_CLUSTER_SSH_PATH}
EOF
/usr/sbin/sshd -t -f "$SSH_DIR/sshd_config" 2>"$LOG/sshd-config-check.log" || die "invalid sshd config" "$LOG/sshd-config-check.log"
SSHD_HASH=$(file_hash "$SSH_DIR/sshd_config")
if alive sshd && [[ $(hash_get sshd) != "$SSHD_HASH" ]]; then stop_daemon sshd; fi
if ! alive sshd; then
  port_busy "$LOCAL_CLUSTER_SSH_PORT" && die "port $LOCAL_CLUSTER_SSH_PORT is taken (set LOCAL_CLUSTER_SSH_PORT)"
  launch sshd "$SSHD_HASH" "$LOG/sshd.log" /usr/sbin/sshd -D -e -f "$SSH_DIR/sshd_config"
fi
# Managed block at the TOP of ~/.ssh/config (ssh uses the first value it finds).
BEGIN_MARK='# >>> local-cluster (managed by start-local-cluster.sh) >>>'
END_MARK='# <<< local-cluster <<<'
{
  echo "$BEGIN_MARK"
  cat <<EOF
Host $LOCAL_CLUSTER_SSH_ALIAS
    HostName 127.0.0.1
    Port $LOCAL_CLUSTER_SSH_PORT
    User $(id -un)
    IdentityFile $CLIENT_KEY
    IdentitiesOnly yes
    StrictHostKeyChecking accept-new
    UserKnownHostsFile $SSH_DIR/known_hosts
    BatchMode yes
    LogLevel ERROR
EOF
  echo "$END_MARK"
  if [[ -f $HOME/.ssh/config ]]; then   # keep the rest of the file, minus our old block
    awk -v b="$BEGIN_MARK" -v e="$END_MARK" '$0==b {skip=1} !skip {print} $0==e {skip=0}' "$HOME/.ssh/config"
  fi
} | write_if_changed "$HOME/.ssh/config" 600
wait_until -d sshd "$LOCAL_CLUSTER_TIMEOUT" "ssh $ALIAS1" "$LOG/sshd.log" ssh "$ALIAS1" true
log "ssh $ALIAS1 works (127.0.0.1:$LOCAL_CLUSTER_SSH_PORT)"

# ---------------------------------------------------------------- 7. report
{
  echo "export LOCAL_CLUSTER_DIR=$D"
  echo "export LOCAL_CLUSTER_SSH_HOST=$ALIAS1"
  echo "export LOCAL_CLUSTER_SSH_PORT=$LOCAL_CLUSTER_SSH_PORT"
  echo "export LOCAL_CLUSTER_SLURM_NODE=$NODE"
  echo "export LOCAL_CLUSTER_SLURM_PARTITION=$LOCAL_CLUSTER_PARTITION"
  echo "export LOCAL_CLUSTER_ACCOUNTING=$LOCAL_CLUSTER_ACCOUNTING"
  echo "export SLURM_CONF=$SLURM_CONF"
} >"$D/env"
log "cluster ready in $((SECONDS - START_TS))s; logs in $LOG; stop with: bash $(dirname "$0")/stop.sh"

# ---------------------------------------------------------------- 8. self-test (optional)
self_test() {
  local jid jid2
  T=$(mktemp -d /tmp/local-cluster-selftest.XXXXXX)
  log "self-test in $T"
  # 1) sbatch --array + squeue: each task writes its index to a file.
  # shellcheck disable=SC2016  # expanded by the job
  jid=$(sbatch --parsable --array=1-3 -o "$T/slurm-%A_%a.out" --chdir "$T" \
        --wrap 'echo $SLURM_ARRAY_TASK_ID > probe_$SLURM_ARRAY_TASK_ID') || die "sbatch failed"
  squeue -j "$jid" >&2 || die "squeue -j $jid failed"
  probes_done() { local i; for i in 1 2 3; do [[ $(cat "$T/probe_$i" 2>/dev/null) == "$i" ]] || return 1; done; }
  wait_until "$LOCAL_CLUSTER_TIMEOUT" "array job $jid" "$LOG/slurmd.log" probes_done
  log "ok: sbatch --array=1-3 (job $jid) wrote probe_1..3"
  # 2) srun (interactive step through slurmd back to this process).
  [[ $(timeout "$LOCAL_CLUSTER_TIMEOUT" srun -N1 -n1 hostname -s) == "$NODE" ]] || die "srun hostname failed" "$LOG/slurmd.log"
  log "ok: srun"
  # 3) scancel a running job.
  jid2=$(sbatch --parsable -o /dev/null --wrap 'sleep 600') || die "sbatch failed"
  wait_until "$LOCAL_CLUSTER_TIMEOUT" "job $jid2 to run" "$LOG/slurmctld.log" \
    bash -c "[[ \$(squeue -h -j $jid2 -o %T) == RUNNING ]]"
  scancel "$jid2"
  wait_until "$LOCAL_CLUSTER_TIMEOUT" "job $jid2 to be cancelled" "$LOG/slurmctld.log" \
    bash -c "scontrol show job -o $jid2 | grep -q JobState=CANCELLED"
  log "ok: scancel"
  # 4) sacct (only with accounting): the 3 array tasks are recorded as COMPLETED.
  if [[ $LOCAL_CLUSTER_ACCOUNTING == 1 ]]; then
    wait_until "$LOCAL_CLUSTER_TIMEOUT" "sacct to show job $jid" "$LOG/slurmdbd.log" \
      bash -c "[[ \$(sacct -n -X -P -j $jid -o State | grep -c COMPLETED) == 3 ]]"
    log "ok: sacct"
  fi
  # 5) ssh, rsync, and sbatch through ssh (the way submission scripts use a cluster).
  mkdir -p "$T/src/sub"; echo hello >"$T/src/a.txt"; echo world >"$T/src/sub/b.txt"
  rsync -a "$T/src/" "$ALIAS1:$T/dst/" || die "rsync to $ALIAS1 failed" "$LOG/sshd.log"
  diff -r "$T/src" "$T/dst" >/dev/null || die "rsync copy differs"
  # shellcheck disable=SC2029  # $T is meant to expand here
  [[ $(ssh "$ALIAS1" "cd $T && sbatch --parsable --wait -o via_ssh.out --wrap 'echo via-ssh' >/dev/null && cat via_ssh.out") == via-ssh ]] \
    || die "sbatch --wait through ssh failed" "$LOG/sshd.log"
  log "ok: ssh $ALIAS1, rsync, sbatch --wait via ssh"
  rm -rf "$T"
  log "SELF-TEST PASSED in $((SECONDS - START_TS))s total"
}
((SELF_TEST)) && self_test

cat "$D/env"
