package providers

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A lookup that found no feed and reaches the download after another one
// (the start-up refresh) loaded it downloads nothing: some feeds allow a
// few downloads a day. The coalescing engine test saw a second Feodo
// download about once in ten loaded runs before the check moved inside
// the single flight.
func TestAColdLoadAfterAFinishedDownloadDownloadsNothing(t *testing.T) {
	ctx := context.Background()
	r := newRefresher(time.Now)
	downloads, loaded := 0, false
	download := func(context.Context) error { downloads++; loaded = true; return nil }
	isLoaded := func() bool { return loaded }

	if err := r.do(ctx, download); err != nil { // the start-up refresh
		t.Fatal(err)
	}
	if err := r.loadCold(ctx, isLoaded, download); err != nil { // the lookup that saw no feed
		t.Fatal(err)
	}
	if downloads != 1 {
		t.Fatalf("%d downloads, want the start-up's only", downloads)
	}
}

// A cold load of a feed that is not loaded downloads it; one after a recent
// failure answers with that failure at once.
func TestAColdLoadDownloadsOrAnswersTheRecentFailure(t *testing.T) {
	ctx := context.Background()
	now := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	r := newRefresher(func() time.Time { return now })
	downloads := 0
	down := errors.New("connection refused")
	failing := func(context.Context) error { downloads++; return down }
	never := func() bool { return false }

	if err := r.loadCold(ctx, never, failing); !errors.Is(err, down) || downloads != 1 {
		t.Fatalf("first cold load: %v after %d downloads", err, downloads)
	}
	if err := r.loadCold(ctx, never, failing); !errors.Is(err, down) || downloads != 1 {
		t.Fatalf("within coldRetry: %v after %d downloads, want the failure and no download", err, downloads)
	}
	now = now.Add(coldRetry)
	if _ = r.loadCold(ctx, never, failing); downloads != 2 {
		t.Fatalf("after coldRetry: %d downloads, want a second", downloads)
	}
}
