#!/usr/bin/env bash
# The images' base, made on this machine from Debian's own archive, so that no image registry
# is needed: debootstrap a minimal Debian 12 (bookworm) root, trim it, `docker import` it.
#   deploy/images/base.sh [TAG]        default TAG: bertserve-base:bookworm
# The archive is the one apt already uses here ($DEBIAN_MIRROR overrides). Needs root,
# debootstrap and a running Docker engine. Any Debian 12 image (debian:bookworm-slim from a
# registry, say) serves as well: pass it to deploy/images/build.sh as BASE_IMAGE.
set -euo pipefail

TAG="${1:-bertserve-base:bookworm}"
SUITE=bookworm

mirror() {
  if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
    echo "$DEBIAN_MIRROR"
    return
  fi
  # deb822 sources first (Debian 12's default), then the one-line format.
  local found
  found="$(grep -hs '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}' |
    grep -v -- '-security' | head -n1 || true)"
  if [[ -z "$found" ]]; then
    found="$(grep -hs '^deb ' /etc/apt/sources.list | awk '{print $2}' | grep -v -- '-security' |
      head -n1 || true)"
  fi
  [[ -n "$found" ]] || { echo "no Debian archive in apt's sources: set DEBIAN_MIRROR" >&2; exit 1; }
  echo "$found"
}

MIRROR="$(mirror)"
ROOT="$(mktemp -d)"
trap 'rm -rf "$ROOT"' EXIT

debootstrap --variant=minbase --include=ca-certificates "$SUITE" "$ROOT" "$MIRROR"

cat >"$ROOT/etc/apt/sources.list" <<SOURCES
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb ${MIRROR%/debian}/debian-security $SUITE-security main
SOURCES
# Later apt installs in the images leave out documentation and translations.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/01-bertserve-nodoc" <<'DPKG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
DPKG
cat >"$ROOT/etc/apt/apt.conf.d/01-bertserve-slim" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
APT
find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/var/cache/apt/*.bin \
  "$ROOT"/var/cache/apt/archives/*.deb "$ROOT"/var/lib/apt/lists/*
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +

tar -C "$ROOT" --numeric-owner -c . |
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' - "$TAG" >/dev/null
echo "base image $TAG: $(docker image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}')"
