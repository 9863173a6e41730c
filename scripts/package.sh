#!/usr/bin/env bash
# Builds the Debian package into dist/: the binary (with its version), then
# deploy/nfpm.yaml through nfpm (a Go tool of this module: nothing to
# install). VERSION defaults to the last tag, or 0.0.0~dev.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOARCH="${GOARCH:-$(go env GOARCH)}"
export VERSION="${VERSION:-$(git describe --tags --abbrev=0 2>/dev/null | sed 's/^v//' || true)}"
VERSION="${VERSION:-0.0.0~dev}"
mkdir -p bin dist
CGO_ENABLED=0 go build -trimpath \
	-ldflags "-s -w -X main.version=${VERSION} -X main.dateBuilt=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
	-o bin/decnet-stream ./cmd/decnet-stream
go tool nfpm package --config deploy/nfpm.yaml --packager deb --target dist/
ls dist/*.deb
