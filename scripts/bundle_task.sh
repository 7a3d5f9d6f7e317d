#!/usr/bin/env bash
# Bundle cyseg's App Engine task from a built cyseg image (docs/DEPLOY.md, "App Engine task"):
#   scripts/bundle_task.sh IMAGE [OUT_DIR]     e.g. scripts/bundle_task.sh cyseg/s_cyseg_nuclei:0.1.0 dist/
#   scripts/bundle_task.sh --tag               prints the task image's tag only
# The task image is IMAGE with the task as its entry point, tagged as the App Engine wants
# ({namespace with / for .}:{version}), saved as {namespace}-{version}.tar and zipped with task/descriptor.yml.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
field() { sed -n "s/^$1: *//p" "$root/task/descriptor.yml" | head -n 1; }
namespace=$(field namespace)
version=$(field version)
tag="${namespace//.//}:$version"
if [ "${1:-}" = --tag ]; then echo "$tag"; exit; fi
image=${1:?usage: $0 IMAGE [OUT_DIR] | $0 --tag}
out=${2:-dist}
tar="$namespace-$version.tar"
mkdir -p "$out"
printf 'FROM %s\nENTRYPOINT ["python", "-m", "cyseg.task"]\n' "$image" | docker build -t "$tag" -
docker save "$tag" -o "$out/$tar"
cp "$root/task/descriptor.yml" "$out/descriptor.yml"
(cd "$out" && rm -f "$namespace-$version.zip" && python3 -m zipfile -c "$namespace-$version.zip" descriptor.yml "$tar")
echo "task bundle: $out/$namespace-$version.zip (image $tag)"
