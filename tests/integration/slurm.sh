#!/usr/bin/env bash
# A real single-node SLURM with accounting on this machine, for tests/integration/test_slurm.py (root, Debian).
#   bash tests/integration/slurm.sh start   # install (apt-get) if needed, start munged, mariadbd, slurmdbd,
#                                           # slurmctld, slurmd; returns when the node is idle
#   bash tests/integration/slurm.sh stop    # stop the daemons this script started (by their recorded pids) and
#                                           # remove the packages if start installed them
# Facts this follows: shared/notes/local-slurm.md (accounting is required: without slurmdbd submitit never sees a
# requeued or cancelled job finish). State, logs and pids live in $SLURM_TEST_DIR (default /tmp/saccader-slurm).
set -euo pipefail
STATE=${SLURM_TEST_DIR:-/tmp/saccader-slurm}
PIDS=$STATE/pids
DB_PASS=slurmtest
PACKAGES="slurmctld slurmd slurm-client munge slurmdbd mariadb-server"

log() { echo "slurm.sh: $*" >&2; }

install() {
  local need=()
  for bin in slurmctld slurmd sbatch slurmdbd munged mariadbd; do command -v "$bin" >/dev/null || need+=("$bin"); done
  [ ${#need[@]} -eq 0 ] && return
  log "installing slurm, munge and mariadb (missing: ${need[*]})"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends $PACKAGES >/dev/null
  # Remembered so that stop removes them again: with slurm-client installed but no slurmctld running, every
  # Snakemake start waits ~9 s (snakemake-executor-plugin-slurm queries the cluster configuration on import).
  mkdir -p "$STATE" && echo "$PACKAGES" > "$STATE/installed-packages"
}

write_configs() {
  mkdir -p /etc/slurm "$STATE"/{spool,ctld,mysql,log}
  cat > /etc/slurm/slurm.conf <<EOF
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=300
KillWait=5
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=localhost CPUs=$(nproc) Sockets=1 CoresPerSocket=$(nproc) ThreadsPerCore=1 RealMemory=4000
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
  cat > /etc/slurm/slurmdbd.conf <<EOF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
EOF
  chmod 600 /etc/slurm/slurmdbd.conf
}

# Start "$@" in the background, remember its pid (the daemons below run in the foreground: -D / no fork).
spawn() {
  local name=$1; shift
  "$@" > "$STATE/log/$name.out" 2>&1 &
  echo "$name $!" >> "$PIDS"
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local limit=$1 what=$2; shift 2
  for _ in $(seq "$limit"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  log "timed out waiting for $what; logs in $STATE/log"; return 1
}

start() {
  install
  if [ -s "$PIDS" ]; then log "already started (pids in $PIDS); run stop first"; exit 1; fi
  write_configs
  : > "$PIDS"
  trap 'log "start failed; stopping what was started"; stop' ERR EXIT
  if [ ! -s /etc/munge/munge.key ]; then
    mkdir -p /etc/munge
    if command -v mungekey >/dev/null; then mungekey --create --keyfile /etc/munge/munge.key; else create-munge-key -f; fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge && chown munge:munge /run/munge 2>/dev/null || true
  spawn munged runuser -u munge -- munged --foreground
  wait_for 20 munged munge -n

  if [ ! -d "$STATE/mysql/mysql" ]; then
    mysql_install_db --user=mysql --datadir="$STATE/mysql" >/dev/null
  fi
  chown -R mysql:mysql "$STATE/mysql"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  spawn mariadbd mariadbd --user=mysql --datadir="$STATE/mysql" --socket=/run/mysqld/mysqld.sock \
    --pid-file=/run/mysqld/saccader-test.pid --bind-address=127.0.0.1
  wait_for 60 mariadbd mariadb --socket=/run/mysqld/mysqld.sock -e "select 1"
  mariadb --socket=/run/mysqld/mysqld.sock <<EOF
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
EOF

  spawn slurmdbd slurmdbd -D
  wait_for 60 slurmdbd sacctmgr -n list cluster
  sacctmgr -i add cluster local >/dev/null 2>&1 || true
  spawn slurmctld slurmctld -D -i
  wait_for 60 slurmctld scontrol ping
  spawn slurmd slurmd -D -N localhost
  wait_for 60 "idle node" bash -c 'sinfo -h -N -o %t | grep -qx idle'
  trap - ERR EXIT
  log "SLURM is up (sinfo: $(sinfo -h -o '%P %a %D %t'))"
}

stop() {
  # Reverse start order; each pid is one this script started.
  [ -s "$PIDS" ] && tac "$PIDS" | while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
      log "stopped $name ($pid)"
    fi
  done
  [ -f "$PIDS" ] && : > "$PIDS"
  if [ -s "$STATE/installed-packages" ]; then
    log "removing the packages start installed: $(cat "$STATE/installed-packages")"
    DEBIAN_FRONTEND=noninteractive apt-get purge -y -q $(cat "$STATE/installed-packages") >/dev/null
    rm -f "$STATE/installed-packages"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
