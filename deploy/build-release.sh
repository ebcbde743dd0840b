#!/usr/bin/env bash
# Build the release artifact on the controller: the app's tracked files in its working tree
# (uncommitted edits included, untracked files not; which paths: `files` in its flaskstack.toml),
# the stack's files the hosts need (deploy/), and what the app's `build` command makes (the blog
# fingerprints and precompresses its static files), as a reproducible tarball named by its
# content hash:
#
#   .build/releases/flaskstack-<id>.tar.gz      (the path is the only line on stdout)
#
# The same tree always gives the same id, so redeploying an unchanged tree changes nothing on the
# hosts. RELEASE.json inside records where the app came from, the commit and whether the tree was
# dirty (not hashed: a new commit of the same tree is the same release).
#
# Environment:
#   APP            the app: a directory in a git work tree (default: this repository, the blog),
#                  or a git URL with a ref, URL@REF (a branch, tag or commit; default: the
#                  remote's HEAD), cloned afresh
#   PYTHON         a Python with the app's build dependencies (default .venv/bin/python)
#   RELEASES_DIR   (default .build/releases); KEEP_ARCHIVES (default 10)
set -euo pipefail

repo_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
releases_dir="${RELEASES_DIR:-$repo_dir/.build/releases}"
keep_archives="${KEEP_ARCHIVES:-10}"
python="${PYTHON:-$repo_dir/.venv/bin/python}"

log() { echo "build-release: $*" >&2; }
die() { log "$*"; exit 1; }

[[ -x "$python" ]] || die "no Python with the app's dependencies at $python (run: make venv, or set PYTHON)"

staging="$(mktemp -d "${TMPDIR:-/tmp}/flaskstack-release.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
tree="$staging/tree"
mkdir "$tree"

# Where the app comes from. A URL's ref follows its last @, if that comes after its last / (so
# git@host:team/app.git has none).
app="${APP:-$repo_dir}"
if [[ "$app" =~ ^(https?|ssh|git|file):// || "$app" =~ ^[^/]+@[^/]+: ]]; then
  url="$app" ref=""
  if [[ "${app##*/}" == *@* ]]; then
    url="${app%@*}" ref="${app##*@}"
  fi
  log "cloning $url${ref:+ at $ref}"
  git clone --quiet "$url" "$staging/app" >&2 || die "cannot clone $url"
  if [[ -n "$ref" ]]; then
    git -C "$staging/app" checkout --quiet --detach "$ref" >&2 || die "$url has no ref $ref"
  fi
  app_dir="$staging/app"
else
  [[ -d "$app" ]] || die "APP=$app is neither a directory nor a git URL"
  app_dir="$(cd "$app" && pwd)"
fi
git -C "$app_dir" rev-parse --git-dir >/dev/null 2>&1 ||
  die "$app_dir is not in a git work tree (a release holds the app's tracked files)"

manifest() { "$python" "$repo_dir/deploy/manifest.py" "$@"; }
# A manifest that cannot be read lists no files (manifest.py has said why).
mapfile -t app_files < <(manifest get files "$app_dir")
[[ ${#app_files[@]} -gt 0 ]] || die "the app's flaskstack.toml is not usable"

# What runs on the app hosts, and nothing else: editing tests, docs or the roles must not make a
# new release (and a restart). The app's tracked files as they are on disk (a tracked file
# deleted in the work tree is left out), then the stack's files under deploy/.
copy_tracked() {
  local from="$1"
  shift
  (cd "$from" && git ls-files -z --cached -- "$@" |
    while IFS= read -r -d '' path; do
      if [[ -e "$path" || -L "$path" ]]; then printf '%s\0' "$path"; fi
    done |
    tar --null --files-from=- --create --file=-) | tar --extract --file=- --directory="$tree"
}
mapfile -t app_hooks < <(manifest get hooks "$app_dir")
copy_tracked "$app_dir" "${app_files[@]}" "${app_hooks[@]}" flaskstack.toml requirements.txt
for hook in "${app_hooks[@]}"; do
  [[ -f "$tree/$hook" && -x "$tree/$hook" ]] ||
    die "the hook $hook in flaskstack.toml is not a tracked, executable file of the app"
done
[[ -f "$tree/requirements.txt" ]] || die "the app has no requirements.txt (its hash-pinned lock)"
# The stack runs the app with gunicorn and loads its .env with python-dotenv, from the app's venv.
for package in gunicorn python-dotenv; do
  grep -qiE "^$package==" "$tree/requirements.txt" ||
    die "the app's requirements.txt does not pin $package, which the stack runs it with"
done
[[ ! -e "$tree/deploy" ]] || die "the app's files include deploy/, which is the stack's in a release"
copy_tracked "$repo_dir" deploy/gunicorn.conf.py deploy/manifest.py deploy/metrics.py deploy/venv.sh \
  requirements-pip.txt
mv "$tree/requirements-pip.txt" "$tree/deploy/requirements-pip.txt"

# The app's build step, if it declares one, in the release's tree with PYTHON's bin/ first on PATH.
(cd "$tree" && PATH="$(dirname "$python"):$PATH" "$python" deploy/manifest.py run build) >&2 ||
  die "the app's build command failed"

# deploy/static: the directory nginx serves at /static/, by the same path whatever the app's
# (`static` in its manifest; none: an empty directory).
static="$(manifest get static "$tree")"
if [[ -n "$static" ]]; then
  [[ -d "$tree/$static" ]] || die "static = \"$static\" in flaskstack.toml is not a directory of the release"
  ln -s "../$static" "$tree/deploy/static"
else
  mkdir "$tree/deploy/static"
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
  commit="$(git -C "$app_dir" rev-parse HEAD 2>/dev/null || echo none)"
  dirty=false
  if [[ -n "$(git -C "$app_dir" status --porcelain --untracked-files=no -- .)" ]]; then dirty=true; fi
  "$python" -c 'import json, sys; i, a, c, d, t, b = sys.argv[1:]; print(json.dumps(
      {"id": i, "app": a, "commit": c, "dirty": d == "true", "built_at": t, "built_by": b}))' \
    "$release_id" "$app" "$commit" "$dirty" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "${USER:-$(id -un)}@$(hostname)" >"$tree/RELEASE.json"

  mkdir -p "$releases_dir"
  # Reproducible layout: sorted names, one owner, the commit's time as every file's mtime.
  mtime="@$(git -C "$app_dir" log -1 --format=%ct 2>/dev/null || echo 0)"
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
