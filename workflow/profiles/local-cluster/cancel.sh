#!/usr/bin/env bash
# Cancel jobs started by submit.sh (Snakemake calls this with job ids on Ctrl-C): each job runs in its own session,
# so signalling its process group stops the jobscript and everything it started.
spool=${SDM_LOCAL_CLUSTER_DIR:-.snakemake/local-cluster}
for jobid in "$@"; do
    pidfile=$spool/$jobid/pid
    [[ -f $pidfile ]] && kill -TERM -- "-$(<"$pidfile")" 2>/dev/null
done
exit 0
