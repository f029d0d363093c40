#!/usr/bin/env bash
# Builds the container image strata:local from this checkout, pulling nothing:
# FROM scratch with the three binaries and the shared libraries they link.
#
#   STRATA_PROFILE=release|debug   cargo profile to build and package (default release)
#   STRATA_SKIP_CARGO=1            package the binaries already in target/<profile>
#   STRATA_IMAGE=strata:local      image tag
#   STRATA_STRIP=0                 keep debug info (default: strip it, ~10x smaller)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
profile="${STRATA_PROFILE:-release}"
image="${STRATA_IMAGE:-strata:local}"
target="${CARGO_TARGET_DIR:-$repo/target}"
case "$profile" in
  release) cargo_profile=release; out="$target/release" ;;
  debug | dev) cargo_profile=dev; out="$target/debug" ;;
  *) echo "build-image: STRATA_PROFILE must be release or debug, not '$profile'" >&2; exit 2 ;;
esac
bins=(strata strata-coordinator strata-broker)

if [ "${STRATA_SKIP_CARGO:-0}" != 1 ]; then
  # `--workspace --bins` is exactly the three binaries, and for the debug
  # profile the very command scripts/test runs, so it rebuilds nothing there.
  (cd "$repo" && cargo build --profile "$cargo_profile" --workspace --bins)
fi

ctx="$target/docker-context"
rm -rf "$ctx"
mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc" "$ctx/data"
chmod 1777 "$ctx/rootfs/tmp"
for b in "${bins[@]}"; do
  [ -x "$out/$b" ] || { echo "build-image: $out/$b is missing (build it, or unset STRATA_SKIP_CARGO)" >&2; exit 1; }
  if [ "${STRATA_STRIP:-1}" = 1 ] && command -v objcopy >/dev/null; then
    objcopy --strip-debug "$out/$b" "$ctx/rootfs/usr/local/bin/$b"
  else
    cp "$out/$b" "$ctx/rootfs/usr/local/bin/$b"
  fi
done
# Every shared library and the dynamic loader, at the paths ldd reports
# (`libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6`, `/lib64/ld-linux-x86-64.so.2`).
for lib in $(ldd "${bins[@]/#/$out/}" | awk '/=> \// { print $3 } /^\t\// { print $1 }' | sort -u); do
  mkdir -p "$ctx/rootfs$(dirname "$lib")"
  cp -L "$lib" "$ctx/rootfs$lib"
done
# getaddrinfo: container names first from /etc/hosts, then Docker's DNS.
echo 'hosts: files dns' > "$ctx/rootfs/etc/nsswitch.conf"
cp "$repo/deploy/Dockerfile" "$ctx/Dockerfile"

start=$(date +%s)
old=$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
docker build --quiet -t "$image" "$ctx" >/dev/null
# Drop the image this one replaces, unless a container still uses it.
if [ -n "$old" ] && [ "$old" != "$(docker image inspect -f '{{.Id}}' "$image")" ]; then
  docker image rm "$old" >/dev/null 2>&1 || true
fi
echo "build-image: $image from $profile binaries in $(( $(date +%s) - start )) s ($(du -sh "$ctx/rootfs" | cut -f1))"
