package providers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// feedSource downloads one bulk feed: over HTTP with conditional requests
// (a feed that did not change costs the provider a 304), or from a file://
// path for air-gapped sites. With a cache file, each good download is kept
// on disk, so a restart or an outage of the provider serves the last good
// copy (its age is the file's modification time) instead of nothing.
type feedSource struct {
	url       string
	setHeader func(*http.Request) // authentication, Accept
	client    *http.Client
	maxBody   int64
	timeout   time.Duration
	cacheFile string // "" keeps no copy

	mu                 sync.Mutex
	etag, lastModified string
}

// fetch downloads the feed. conditional asks the server for a 304 when
// the feed is unchanged since the last download (only sensible once a copy
// is loaded).
func (s *feedSource) fetch(ctx context.Context, conditional bool) (body []byte, notModified bool, err error) {
	if strings.HasPrefix(s.url, "file:") {
		body, err = s.readFile()
		return body, false, err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.url, nil)
	if err != nil {
		return nil, false, err
	}
	if conditional {
		s.mu.Lock()
		etag, lm := s.etag, s.lastModified
		s.mu.Unlock()
		if etag != "" {
			req.Header.Set("If-None-Match", etag)
		}
		if lm != "" {
			req.Header.Set("If-Modified-Since", lm)
		}
	}
	if s.setHeader != nil {
		s.setHeader(req)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotModified:
		return nil, true, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, false, fmt.Errorf("feed HTTP %d: the key was refused", resp.StatusCode)
	case http.StatusTooManyRequests:
		return nil, false, fmt.Errorf("feed HTTP 429: downloaded too often (Retry-After %q)", resp.Header.Get("Retry-After"))
	default:
		return nil, false, fmt.Errorf("feed HTTP %d", resp.StatusCode)
	}
	body, err = readCapped(resp.Body, s.maxBody)
	if err != nil {
		return nil, false, err
	}
	s.mu.Lock()
	s.etag, s.lastModified = resp.Header.Get("ETag"), resp.Header.Get("Last-Modified")
	s.mu.Unlock()
	return body, false, nil
}

func (s *feedSource) readFile() ([]byte, error) {
	u, err := url.Parse(s.url)
	if err != nil {
		return nil, err
	}
	path := u.Path
	if u.Opaque != "" || u.Host != "" { // file:relative or file://../relative
		path = strings.TrimPrefix(strings.TrimPrefix(s.url, "file://"), "file:")
	}
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	return readCapped(fh, s.maxBody)
}

func readCapped(r io.Reader, max int64) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, max+1))
	if err == nil && int64(len(body)) > max {
		err = fmt.Errorf("feed over %d bytes", max)
	}
	return body, err
}

// save keeps body as the last good copy, dated at: written beside and
// renamed over, so a crash mid-write leaves the previous copy whole.
func (s *feedSource) save(body []byte, at time.Time) error {
	if s.cacheFile == "" {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(s.cacheFile), 0o750); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.cacheFile), filepath.Base(s.cacheFile)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(body); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chtimes(tmp.Name(), at, at); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), s.cacheFile)
}

// touch dates the saved copy at: a 304 says it is still current.
func (s *feedSource) touch(at time.Time) {
	if s.cacheFile != "" {
		_ = os.Chtimes(s.cacheFile, at, at)
	}
}

// saved is the last good copy and when it was downloaded.
func (s *feedSource) saved() (body []byte, at time.Time, err error) {
	if s.cacheFile == "" {
		return nil, time.Time{}, errors.New("no cache file configured")
	}
	st, err := os.Stat(s.cacheFile)
	if err != nil {
		return nil, time.Time{}, err
	}
	body, err = os.ReadFile(s.cacheFile)
	return body, st.ModTime(), err
}

// cacheFileName is the file a provider's feed is kept in under dir: one per
// provider and source, named so an operator can tell them apart.
func cacheFileName(dir, provider string, i int) string {
	if dir == "" {
		return ""
	}
	if i == 0 {
		return filepath.Join(dir, provider+".feed")
	}
	return filepath.Join(dir, fmt.Sprintf("%s.%d.feed", provider, i))
}

// refresher runs a feed's downloads: one at a time (concurrent callers
// share it), on a schedule until stopped, and remembers the last failure,
// so that lookups of a feed that never loaded answer with it at once
// instead of each waiting on a download of its own (see coldRetry).
type refresher struct {
	now      func() time.Time
	load     singleflight.Group
	mu       sync.Mutex
	lastErr  error
	failedAt time.Time
	stop     chan struct{}
	stopOnce sync.Once
}

func newRefresher(now func() time.Time) refresher {
	return refresher{now: now, stop: make(chan struct{})}
}

// coldRetry is how long lookups of a feed that never loaded answer at once
// with the last failure: a provider that is down, or a firewall that drops
// the connection, must not hold every new attacker's lookup for a timeout.
const coldRetry = time.Minute

// do runs fn as the feed's one refresh in flight and records its outcome.
func (r *refresher) do(ctx context.Context, fn func(context.Context) error) error {
	_, err, _ := r.load.Do("refresh", func() (any, error) {
		err := fn(ctx)
		r.mu.Lock()
		r.lastErr = err
		if err != nil {
			r.failedAt = r.now()
		}
		r.mu.Unlock()
		return nil, err
	})
	return err
}

// status is the last refresh's error.
func (r *refresher) status() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lastErr
}

// loadCold is a lookup's load of a feed that has never loaded: the last
// failure at once while it is recent (coldRetry), else a download, unless
// one that finished meanwhile (the start-up refresh, another lookup's)
// loaded the feed — checked inside the single flight, so a lookup that saw
// no feed just before that download ended does not download it again.
func (r *refresher) loadCold(ctx context.Context, loaded func() bool, download func(context.Context) error) error {
	if err := r.recentFailure(); err != nil {
		return err
	}
	return r.do(ctx, func(ctx context.Context) error {
		if loaded() {
			return nil
		}
		return download(ctx)
	})
}

// recentFailure is the last refresh error while it is recent enough to
// answer a cold lookup with.
func (r *refresher) recentFailure() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastErr != nil && r.now().Sub(r.failedAt) < coldRetry {
		return r.lastErr
	}
	return nil
}

// every downloads every interval, each within timeout, until Stop; and
// once at once unless fresh says the copy in service is current. download
// is the feed's own (do makes it the one in flight); fresh is asked inside
// that single flight, so a lookup that loaded the feed meanwhile is never
// followed by a second download — some providers allow a few a day.
func (r *refresher) every(interval, timeout time.Duration, fresh func() bool, download func(context.Context) error) {
	run := func(fn func(context.Context) error) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		_ = r.do(ctx, fn)
	}
	go run(func(ctx context.Context) error {
		if fresh() {
			return nil
		}
		return download(ctx)
	})
	go func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				run(download)
			case <-r.stop:
				return
			}
		}
	}()
}

// Stop ends the scheduled refreshes. Safe to call twice.
func (r *refresher) Stop() { r.stopOnce.Do(func() { close(r.stop) }) }
