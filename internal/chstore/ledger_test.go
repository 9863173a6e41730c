package chstore

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/decnet/decnet-stream/internal/chtest"
	"github.com/decnet/decnet-stream/internal/providers"
)

// Two replicas of one group against one daily budget (GreyNoise, 20 calls)
// spend 20 between them, not 20 each: a budget belongs to the API key, and
// the replicas share one ledger in ClickHouse. Racing for the last calls
// they may leave one unspent for a moment (a refused reservation is being
// withdrawn), never spend one too many; later lookups spend what is left.
func TestTwoReplicasShareOneDailyBudget(t *testing.T) {
	srv := chtest.Start(t)
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) > 20 {
			t.Errorf("call %d against a budget of 20", calls.Load())
		}
		fmt.Fprintf(w, `{"ip":%q,"noise":true,"riot":false,"classification":"malicious","name":"unknown","message":"Success"}`, r.PathValue("ip"))
	}))
	defer api.Close()
	mux := http.NewServeMux()
	mux.Handle("/v3/community/{ip}", api.Config.Handler)
	api.Config.Handler = mux

	dir := t.TempDir()
	replica := func(name string) *providers.GreyNoise {
		ledger, err := OpenLedger(srv.DSN(), "intel_budget")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = ledger.Close() })
		store, err := providers.OpenBudgetStore(filepath.Join(dir, name+".json"))
		if err != nil {
			t.Fatal(err)
		}
		return providers.NewGreyNoise(providers.GreyNoiseConfig{Common: providers.Common{
			BaseURL: api.URL, Budget: store,
			Shared: &providers.Shared{Ledger: ledger, Replica: ReplicaName(filepath.Join(dir, name+".json"))},
			Limits: providers.Limits{DailyBudget: 20, MaxConcurrent: 4, Timeout: 10 * time.Second},
		}})
	}
	replicas := []*providers.GreyNoise{replica("a"), replica("b")}
	var wg sync.WaitGroup
	var answered [2]atomic.Int32
	for r, p := range replicas {
		for i := 0; i < 30; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ip := netip.AddrFrom4([4]byte{45, byte(r), 0, byte(i)})
				if p.Lookup(context.Background(), ip).OK() {
					answered[r].Add(1)
				}
			}()
		}
	}
	wg.Wait()
	// Later lookups, one replica after the other, spend what the race left.
	next := 0
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); calls.Load() < 20 && time.Now().Before(deadline); <-tick.C {
		for r, p := range replicas {
			next++
			if p.Lookup(context.Background(), netip.AddrFrom4([4]byte{45, byte(r), 1, byte(next)})).OK() {
				answered[r].Add(1)
			}
		}
	}
	if n := calls.Load(); n != 20 {
		t.Fatalf("the two replicas made %d calls against one budget of 20 (a: %d, b: %d)", n, answered[0].Load(), answered[1].Load())
	}
	if answered[0].Load() == 0 || answered[1].Load() == 0 {
		t.Fatalf("one replica took the whole budget: a %d, b %d", answered[0].Load(), answered[1].Load())
	}
}
