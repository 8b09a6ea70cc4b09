#!/usr/bin/env bash
# The "Getting a file back" session of the README: two syncctl nodes on 127.0.0.1 (a "laptop"
# and a "nas") with --versioning simple; a report is written, saved twice by an editor (write
# beside, rename over) and deleted by mistake on the laptop; the NAS lists its versions and
# restores the first one, which reaches the laptop. Needs a built syncctl (SYNCCTL=path).
set -u
cd "$(dirname "$0")/.."
S=${SYNCCTL:-$PWD/.build/debug/syncctl}
R=/tmp/vdemo; rm -rf $R; mkdir -p $R/laptop $R/nas
export SYNCKIT_CLUSTER_KEY=demo-versions-key
$S run --dir $R/laptop --port 22101 --bind 127.0.0.1 --peer 127.0.0.1:22102 --name laptop --versioning simple --versions-keep 10 --log stderr 2>$R/laptop.log & A=$!
$S run --dir $R/nas --port 22102 --bind 127.0.0.1 --peer 127.0.0.1:22101 --name nas --versioning simple --versions-keep 10 --versions-max-size 10G --log stderr 2>$R/nas.log & B=$!
sleep 2
mkdir -p $R/laptop/reports
echo "Q3: revenue up 4%" > $R/laptop/reports/q3.md; sleep 1.2
echo "Q3: revenue up 4%, costs flat" > $R/laptop/reports/q3.md.tmp && mv $R/laptop/reports/q3.md.tmp $R/laptop/reports/q3.md; sleep 1.2
echo "Q3: (draft lost)" > $R/laptop/reports/q3.md.tmp && mv $R/laptop/reports/q3.md.tmp $R/laptop/reports/q3.md; sleep 1.2
rm $R/laptop/reports/q3.md; sleep 1.5
echo '$ ls reports/   # on the NAS'; ls $R/nas/reports/
echo '$ syncctl versions list --dir /srv/nas reports/q3.md'
$S versions list --dir $R/nas reports/q3.md
AT=$($S versions list --dir $R/nas reports/q3.md --json | python3 -c 'import json,sys; v=[x for x in json.load(sys.stdin) if x["reason"]=="replaced"]; v.sort(key=lambda x:x["time"]); import datetime; print(datetime.datetime.fromtimestamp(v[0]["time"]+0.0004, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f")[:23])')
echo "\$ syncctl versions restore --dir /srv/nas reports/q3.md --at '$AT'"
$S versions restore --dir $R/nas reports/q3.md --at "$AT"
sleep 1.5
echo '$ cat reports/q3.md   # on the laptop'; cat $R/laptop/reports/q3.md
echo '$ syncctl versions list --dir ~/work   # the laptop kept its own edits and delete'
$S versions list --dir $R/laptop
echo '$ syncctl status --dir /srv/nas'
$S status --dir $R/nas
kill $A $B; wait
