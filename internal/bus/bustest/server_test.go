package bustest

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/decnet/decnet-stream/internal/bus"
)

// The test bus is as strict as DECNET's: a client that sends EVT (only the
// bus sends events) is dropped, and other clients go on being served.
func TestAClientSendingEVTIsDropped(t *testing.T) {
	dir, err := os.MkdirTemp("", "bus")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	s, err := Start(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	rogue, err := bus.Dial(ctx, s.Path, "rogue")
	if err != nil {
		t.Fatal(err)
	}
	defer rogue.Close()
	good, err := bus.Dial(ctx, s.Path, "good")
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	if err := good.Write(bus.Frame{Verb: bus.Sub, Arg: "attacker.>"}); err != nil {
		t.Fatal(err)
	}
	if err := rogue.Write(bus.Frame{Verb: bus.Evt, Arg: "attacker.observed", Body: []byte(`{"v":1}`)}); err != nil {
		t.Fatal(err)
	}
	if _, err := rogue.Read(); err == nil {
		t.Fatal("the bus kept a client that sent EVT")
	}
	for deadline := time.Now().Add(5 * time.Second); s.Subscribers("attacker.observed") == 0; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the good client's subscription never registered")
		}
	}
	s.Publish("attacker.observed", "observed", []byte(`{"attacker_ip":"203.0.113.45"}`))
	f, err := good.Read()
	if err != nil || f.Verb != bus.Evt || f.Arg != "attacker.observed" {
		t.Fatalf("the good client read %+v, %v", f, err)
	}
}
