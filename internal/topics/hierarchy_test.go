package topics

import (
	"errors"
	"testing"
)

func TestBuilders(t *testing.T) {
	ok := func(s string, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for got, want := range map[string]string{
		ok(TopologyMutation("t1", MutationApplied)): "topology.t1.mutation.applied",
		ok(TopologyStatusOf("t1")):                  "topology.t1.status",
		ok(Decky("decky-01", DeckyTraffic)):         "decky.decky-01.traffic",
		ok(DeckyMutationOf("decky-01")):             "decky.decky-01.mutation",
		ok(System(SystemBusHealth)):                 "system.bus.health",
		ok(Credential(CredentialReuseDetected)):     "credential.reuse.detected",
		ok(Attacker(AttackerSessionStarted)):        "attacker.session.started",
		ok(WorkerHealth("intel")):                   "system.intel.health",
		ok(WorkerControl("intel")):                  "system.intel.control",
	} {
		if got != want {
			t.Errorf("built %q, want %q", got, want)
		}
	}
	if SubjectWebhookSubscriptionsChanged != "system.webhook.subscriptions_changed" {
		t.Error(SubjectWebhookSubscriptionsChanged)
	}
}

func TestBuildersRejectBadSegments(t *testing.T) {
	bad := []string{"", "a.b", "a*", "*", ">", "a>", "a b", "a\tb", "a\nb", "\u00a0", "a\x00"}
	builders := map[string]func(string) (string, error){
		"topology mutation id":    func(s string) (string, error) { return TopologyMutation(s, MutationApplied) },
		"topology mutation state": func(s string) (string, error) { return TopologyMutation("t1", s) },
		"topology status":         TopologyStatusOf,
		"decky id":                func(s string) (string, error) { return Decky(s, DeckyState) },
		"decky type":              func(s string) (string, error) { return Decky("d1", s) },
		"decky mutation":          DeckyMutationOf,
		"worker health":           WorkerHealth,
		"worker control":          WorkerControl,
	}
	for name, build := range builders {
		for _, seg := range bad {
			if s, err := build(seg); err == nil || !errors.Is(err, ErrBadSegment) {
				t.Errorf("%s(%q) = %q, %v; want ErrBadSegment", name, seg, s, err)
			}
		}
	}
}

func TestDottedLeaves(t *testing.T) {
	for _, build := range []func(string) (string, error){System, Credential, Attacker} {
		for _, leaf := range []string{"", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b"} {
			if s, err := build(leaf); err == nil {
				t.Errorf("leaf %q accepted as %q", leaf, s)
			}
		}
		if _, err := build("x.y.z"); err != nil {
			t.Errorf("dotted leaf refused: %v", err)
		}
	}
}
