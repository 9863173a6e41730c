// Package deploy holds what installs decnet-stream on a host: the Debian
// package's description (nfpm.yaml, built by scripts/package.sh), the
// hardened systemd unit, the defaults file and maintainer scripts, and the
// Grafana dashboard. It has no Go code: its test (build tag package, run by
// `go tool task test:package` as root) builds the package and installs it.
package deploy
