//go:build package

package deploy

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = ".."
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// The package builds, installs with dpkg -i, runs its binary as its own
// user over its own configs, its unit passes systemd-analyze verify, and a
// purge leaves nothing behind.
func TestDebianPackageInstallsAndPurges(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("installing a package needs root: run `go tool task test:package` as root (CI does)")
	}
	out := run(t, "bash", "scripts/package.sh")
	debs, _ := filepath.Glob("../dist/decnet-stream_*.deb")
	if len(debs) != 1 {
		t.Fatalf("want one package in dist/, got %v\n%s", debs, out)
	}
	deb, _ := filepath.Abs(debs[0])
	t.Cleanup(func() { _ = exec.Command("dpkg", "--purge", "decnet-stream").Run() })
	run(t, "dpkg", "-i", deb)

	if _, err := exec.Command("getent", "passwd", "decnet-stream").Output(); err != nil {
		t.Fatal("no decnet-stream user after install")
	}
	if fi, err := os.Stat("/etc/default/decnet-stream"); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("/etc/default/decnet-stream (secrets): %v %v, want mode 0600", fi.Mode(), err)
	}
	confs, _ := filepath.Glob("/etc/decnet-stream/streams/*.yaml")
	more, _ := filepath.Glob("/etc/decnet-stream/streams/decnet/*.yaml")
	args := append([]string{"-u", "decnet-stream", "--", "/usr/bin/decnet-stream", "lint", "/etc/decnet-stream/pipeline.yaml"}, append(confs, more...)...)
	run(t, "runuser", args...)

	unit := "/lib/systemd/system/decnet-stream.service"
	checkUnit(t, unit)
	if _, err := exec.LookPath("systemd-analyze"); err == nil {
		if out := run(t, "systemd-analyze", "verify", unit); strings.TrimSpace(out) != "" {
			t.Errorf("systemd-analyze verify:\n%s", out)
		}
	} else {
		t.Log("no systemd-analyze here: the unit's fields were checked, not verified by systemd")
	}

	run(t, "dpkg", "--purge", "decnet-stream")
	for _, p := range []string{"/usr/bin/decnet-stream", "/etc/decnet-stream", unit, "/var/lib/decnet-stream"} {
		if _, err := os.Lstat(p); err == nil {
			t.Errorf("%s is left after purge", p)
		}
	}
	if err := exec.Command("getent", "passwd", "decnet-stream").Run(); err == nil {
		t.Error("the decnet-stream user is left after purge")
	}
}

// checkUnit reads the unit's settings and checks what the hardening rests
// on, with or without systemd at hand.
func checkUnit(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			got[k] = append(got[k], v)
		}
	}
	for k, want := range map[string]string{
		"User": "decnet-stream", "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateTmp": "yes", "StateDirectory": "decnet-stream", "WorkingDirectory": "/var/lib/decnet-stream",
		"CapabilityBoundingSet": "", "KillSignal": "SIGTERM", "Restart": "on-failure",
	} {
		if len(got[k]) == 0 || got[k][0] != want {
			t.Errorf("%s: %s=%q, want %q", path, k, got[k], want)
		}
	}
	exec := strings.Fields(strings.Join(got["ExecStart"], ""))
	if len(exec) == 0 || exec[0] != "/usr/bin/decnet-stream" || exec[len(exec)-1] != "/etc/decnet-stream/pipeline.yaml" {
		t.Errorf("ExecStart=%q", got["ExecStart"])
	}
}
