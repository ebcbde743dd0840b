#!/usr/bin/env bash
# Build the release artifact on the controller: the app's tracked files in the working tree
# (uncommitted edits included, untracked files not) plus the fingerprinted, precompressed static
# files from `python -m app.assets build`, as a reproducible tarball named by its content hash:
#
#   .build/releases/flaskstack-<id>.tar.gz      (the path is the only line on stdout)
#
# The same tree always gives the same id, so redeploying an unchanged tree changes nothing on the
# hosts. RELEASE.json inside records the commit and whether the tree was dirty (not hashed: a new
# commit of the same tree is the same release).
#
# Environment: PYTHON (default .venv/bin/python, which has the app's dependencies),
# RELEASES_DIR (default .build/releases), KEEP_ARCHIVES (default 10).
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
releases_dir="${RELEASES_DIR:-$repo_dir/.build/releases}"
keep_archives="${KEEP_ARCHIVES:-10}"
python="${PYTHON:-$repo_dir/.venv/bin/python}"

log() { echo "build-release: $*" >&2; }
die() { log "$*"; exit 1; }

[[ -x "$python" ]] || die "no Python with the app's dependencies at $python (run: make venv, or set PYTHON)"
git -C "$repo_dir" rev-parse --git-dir >/dev/null 2>&1 || die "$repo_dir is not a git work tree"

staging="$(mktemp -d "${TMPDIR:-/tmp}/flaskstack-release.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
tree="$staging/tree"
mkdir "$tree"

# What runs on the app hosts, and nothing else: editing tests, docs or the roles must not make a
# new release (and a restart). The tracked files as they are on disk; a tracked file deleted in
# the work tree is left out.
release_paths=(app migrations flaskstack.yml deploy/gunicorn.conf.py deploy/venv.sh requirements.txt
  requirements-pip.txt)
cd "$repo_dir"
git ls-files -z --cached -- "${release_paths[@]}" |
  while IFS= read -r -d '' path; do
    if [[ -e "$path" || -L "$path" ]]; then printf '%s\0' "$path"; fi
  done |
  tar --null --files-from=- --create --file=- | tar --extract --file=- --directory="$tree"

if [[ -f "$tree/app/assets.py" ]]; then
  (cd "$tree" && "$python" -m app.assets build) >&2 || die "python -m app.assets build failed"
fi

# Normalise what the hosts will see (umask differences must not change the id).
chmod -R u+rwX,go+rX,go-w "$tree"

# The id: a hash over every path, its type and mode, a symlink's target and a file's content.
release_id="$(
  cd "$tree"
  {
    find . \( -type f -o -type l \) -printf '%y %m %p %l\n' | LC_ALL=C sort
    find . -type f -print0 | LC_ALL=C sort -z | xargs -0 --no-run-if-empty sha256sum
  } | sha256sum | cut -c1-12
)"
archive="$releases_dir/flaskstack-${release_id}.tar.gz"

if [[ -f "$archive" ]]; then
  touch "$archive"
  log "release $release_id is unchanged ($(realpath --relative-to="$repo_dir" "$archive"))"
else
  commit="$(git rev-parse HEAD 2>/dev/null || echo none)"
  dirty=false
  if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then dirty=true; fi
  printf '{"id": "%s", "commit": "%s", "dirty": %s, "built_at": "%s", "built_by": "%s"}\n' \
    "$release_id" "$commit" "$dirty" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "${USER:-$(id -un)}@$(hostname)" \
    >"$tree/RELEASE.json"

  mkdir -p "$releases_dir"
  # Reproducible layout: sorted names, one owner, the commit's time as every file's mtime.
  mtime="@$(git log -1 --format=%ct 2>/dev/null || echo 0)"
  tar --create --directory="$tree" --sort=name --owner=0 --group=0 --numeric-owner \
    --mtime="$mtime" . | gzip -n -6 >"$archive.tmp.$$"
  # Atomic: a concurrent build of the same release never sees a partial archive.
  mv "$archive.tmp.$$" "$archive"
  log "built release $release_id (commit ${commit:0:12}$([[ $dirty == true ]] && echo ', dirty tree')," \
    "$(du -h "$archive" | cut -f1)): $(realpath --relative-to="$repo_dir" "$archive")"
fi

# Keep the newest archives only.
find "$releases_dir" -maxdepth 1 -name 'flaskstack-*.tar.gz' -printf '%T@ %p\n' |
  sort -rn | tail -n "+$((keep_archives + 1))" | cut -d' ' -f2- | xargs --no-run-if-empty rm -f

echo "$archive"
