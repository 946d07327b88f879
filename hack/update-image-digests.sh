#!/usr/bin/env bash
# Moves the Dockerfile's digest-pinned base images to the digests their tags
# point at today. Needs registry access and crane (go install
# github.com/google/go-containerregistry/cmd/crane@latest) or skopeo; run it,
# review the diff, then make image and make image-test.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
digest() { # digest <image:tag> -> sha256:... of the tag's index (all platforms)
  if command -v crane >/dev/null 2>&1; then
    crane digest "$1"
  elif command -v skopeo >/dev/null 2>&1; then
    echo "sha256:$(skopeo inspect --raw "docker://$1" | sha256sum | cut -d' ' -f1)"
  else
    echo "update-image-digests: needs crane or skopeo" >&2
    exit 1
  fi
}
for arg in GO_IMAGE BASE_IMAGE; do
  ref=$(sed -n "s/^ARG ${arg}=\(.*\)@sha256:.*/\1/p" Dockerfile)
  [[ -n "$ref" ]] || { echo "update-image-digests: Dockerfile has no ARG ${arg}=<image>@sha256:..." >&2; exit 1; }
  d=$(digest "$ref")
  sed -i "s|^ARG ${arg}=.*|ARG ${arg}=${ref}@${d}|" Dockerfile
  echo "${arg}=${ref}@${d}"
done
