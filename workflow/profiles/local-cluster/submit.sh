#!/usr/bin/env bash
# Local "scheduler" for snakemake-executor-plugin-cluster-generic: starts the jobscript Snakemake hands over as a
# detached background process (its own session, like a job on a compute node) and prints the job id Snakemake then
# passes to status.sh and cancel.sh. Called as `submit.sh JOBSCRIPT` from Snakemake's working directory.
#
# Everything goes under $SDM_LOCAL_CLUSTER_DIR (default .snakemake/local-cluster in the working directory):
#   submitted.tsv        one line per submitted job: job id, rule, threads, submission time
#   <job id>/jobscript   a copy of the jobscript; log = its stdout and stderr; pid; exit = its exit status
set -euo pipefail

jobscript=$1
spool=${SDM_LOCAL_CLUSTER_DIR:-.snakemake/local-cluster}
mkdir -p "$spool"
jobdir=$(mktemp -d "$spool/job.XXXXXXXX")
jobid=${jobdir##*/}

# The jobscript carries the job's properties as one JSON comment line (rule, threads, resources, ...).
properties=$(sed -n 's/^# properties = //p' "$jobscript")
rule=$(grep -o '"rule": *"[^"]*"' <<<"$properties" | sed 's/.*: *"\(.*\)"/\1/' || true)
threads=$(grep -o '"threads": *[0-9]*' <<<"$properties" | grep -o '[0-9]*$' || true)

cp "$jobscript" "$jobdir/jobscript"
# The job's shell records its own pid (its session and process group id, for cancel.sh) and, at the end, the
# jobscript's exit status; both are written then renamed, so status.sh never reads half a file. Every descriptor is
# redirected, or Snakemake (which reads this script's stdout) would wait for the job to end.
setsid nohup sh -c 'echo $$ >"$1/pid.tmp"; mv "$1/pid.tmp" "$1/pid"
    sh "$1/jobscript" >"$1/log" 2>&1; echo $? >"$1/exit.tmp"; mv "$1/exit.tmp" "$1/exit"' \
    sh "$jobdir" </dev/null >/dev/null 2>&1 &
for _ in $(seq 100); do [[ -f $jobdir/pid ]] && break; sleep 0.1; done
[[ -f $jobdir/pid ]] || { echo "submit.sh: job $jobid did not start" >&2; exit 1; }

printf '%s\t%s\t%s\t%s\n' "$jobid" "${rule:-group}" "${threads:-1}" "$(date -u +%FT%TZ)" >>"$spool/submitted.tsv"
echo "$jobid"
