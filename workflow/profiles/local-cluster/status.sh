#!/usr/bin/env bash
# Status of a job started by submit.sh, for snakemake-executor-plugin-cluster-generic: prints exactly one of
# running, success or failed. Called as `status.sh JOBID` from Snakemake's working directory.
set -uo pipefail

jobdir=${SDM_LOCAL_CLUSTER_DIR:-.snakemake/local-cluster}/$1

if [[ -f $jobdir/exit ]]; then
    [[ $(<"$jobdir/exit") == 0 ]] && echo success || echo failed
elif [[ -f $jobdir/pid ]] && kill -0 "$(<"$jobdir/pid")" 2>/dev/null; then
    echo running
elif [[ -f $jobdir/exit ]]; then  # it finished between the two checks above
    [[ $(<"$jobdir/exit") == 0 ]] && echo success || echo failed
else  # gone without an exit status: killed, or the machine restarted
    echo failed
fi
