package providers

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// FeodoData is what Feodo Tracker's blocklist says of an IP.
type FeodoData struct {
	Listed        bool     `json:"listed"`
	MalwareFamily string   `json:"malware_family,omitempty"` // of the most recent entry
	Families      []string `json:"families,omitempty"`
	Ports         []int    `json:"ports,omitempty"`
	Status        string   `json:"status,omitempty"` // online when any entry is online
	FirstSeen     string   `json:"first_seen,omitempty"`
	// FeedAge is how old the feed that answered is.
	FeedAge time.Duration `json:"feed_age"`
}

// FeodoConfig configures the Feodo Tracker blocklist.
type FeodoConfig struct {
	// URL of the feed: http(s):// or file:// for air-gapped sites. The
	// format follows the extension (.json default, .csv, .txt).
	URL             string
	RefreshInterval time.Duration // default 1h
	AuthKey         string        // sent as Auth-Key when set (abuse.ch is rolling keys out)
	Client          *http.Client
	Guard           *Guard
	MaxBodyBytes    int64 // default 16 MiB
	Timeout         time.Duration
	Now             func() time.Time
	// CacheDir keeps the last good feed on disk (feodo.feed): a restart or
	// an outage of abuse.ch serves it, with its age, until a refresh works.
	CacheDir string
	// Policy makes answers verdicts; default DECNET's rules.
	Policy *Policy
}

// DefaultFeodoURL is the JSON blocklist.
const DefaultFeodoURL = "https://feodotracker.abuse.ch/downloads/ipblocklist.json"

// Feodo answers lookups from an in-memory index of the blocklist, refreshed
// in the background with conditional requests: never a request per IP. A
// failed refresh keeps serving the last good feed; lookups fail only while
// no feed has ever loaded.
type Feodo struct {
	refresher
	conf    FeodoConfig
	source  *feedSource
	index   atomic.Pointer[feodoIndex]
	fetches atomic.Int64
}

type feodoIndex struct {
	byIP     map[netip.Addr]*FeodoData
	loadedAt time.Time
	raw      map[netip.Addr][]byte
	skipped  int
}

// NewFeodo builds the provider. Call Start to refresh in the background.
func NewFeodo(c FeodoConfig) *Feodo {
	if c.URL == "" {
		c.URL = DefaultFeodoURL
	}
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = time.Hour
	}
	if c.Client == nil {
		c.Client = DefaultHTTPClient()
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 16 << 20
	}
	if c.Timeout <= 0 {
		c.Timeout = 30 * time.Second
	}
	fillDefaults(&c.Now, &c.Guard, &c.Policy)
	src := &feedSource{url: c.URL, client: c.Client, maxBody: c.MaxBodyBytes, timeout: c.Timeout,
		cacheFile: cacheFileName(c.CacheDir, NameFeodo, 0)}
	if c.AuthKey != "" {
		src.setHeader = func(r *http.Request) { r.Header.Set("Auth-Key", c.AuthKey) }
	}
	return &Feodo{refresher: newRefresher(c.Now), conf: c, source: src}
}

func (f *Feodo) Name() string { return NameFeodo }

// Fetches counts feed downloads attempted (conditional or not).
func (f *Feodo) Fetches() int64 { return f.fetches.Load() }

// Start serves the last good copy on disk at once, if there is one, and
// refreshes the feed every RefreshInterval until Stop (at once when the
// copy is older than that).
func (f *Feodo) Start() {
	if f.index.Load() == nil {
		_ = f.loadSaved()
	}
	f.every(f.conf.RefreshInterval, f.conf.Timeout, func() bool {
		idx := f.index.Load()
		return idx != nil && f.conf.Now().Sub(idx.loadedAt) < f.conf.RefreshInterval
	}, f.refresh)
}

// Refresh fetches the feed now (one refresh in flight at a time: concurrent
// callers share it). On failure the previous feed stays in service.
func (f *Feodo) Refresh(ctx context.Context) error { return f.do(ctx, f.refresh) }

func (f *Feodo) refresh(ctx context.Context) error {
	f.fetches.Add(1)
	err := f.download(ctx)
	if err != nil && f.index.Load() == nil && f.loadSaved() == nil {
		// Nothing served yet: the last good copy, with its age, beats
		// nothing. The error still stands for the status.
		return fmt.Errorf("%w (serving the copy saved %s)", err, f.index.Load().loadedAt.UTC().Format(time.RFC3339))
	}
	return err
}

func (f *Feodo) download(ctx context.Context) error {
	body, notModified, err := f.source.fetch(ctx, f.index.Load() != nil)
	if err != nil {
		return err
	}
	now := f.conf.Now()
	if notModified {
		if old := f.index.Load(); old != nil {
			f.index.Store(&feodoIndex{byIP: old.byIP, raw: old.raw, skipped: old.skipped, loadedAt: now})
			f.source.touch(now)
			return nil
		}
		return errors.New("feed not modified, but none loaded yet")
	}
	idx, err := parseFeodo(body, feedFormat(f.conf.URL))
	if err != nil {
		return err
	}
	idx.loadedAt = now
	f.index.Store(idx)
	if err := f.source.save(body, now); err != nil {
		return fmt.Errorf("feed loaded, but not saved: %w", err)
	}
	return nil
}

// loadSaved serves the copy kept on disk, dated when it was downloaded.
func (f *Feodo) loadSaved() error {
	body, at, err := f.source.saved()
	if err != nil {
		return err
	}
	idx, err := parseFeodo(body, feedFormat(f.conf.URL))
	if err != nil {
		return err
	}
	idx.loadedAt = at
	f.index.CompareAndSwap(nil, idx)
	return nil
}

func feedFormat(u string) string {
	p := u
	if parsed, err := url.Parse(u); err == nil {
		p = parsed.Path
	}
	switch {
	case strings.HasSuffix(p, ".csv"):
		return "csv"
	case strings.HasSuffix(p, ".txt"):
		return "txt"
	}
	return "json"
}

type feodoEntry struct {
	IP        string          `json:"ip_address"`
	Port      json.RawMessage `json:"port"`
	Status    string          `json:"status"`
	FirstSeen string          `json:"first_seen"`
	Malware   string          `json:"malware"`
}

// parseFeodo builds the index. Rows that cannot be read (a bad IP, a port
// that is not a number) are skipped and counted, never fatal; a feed that
// is not a list at all is an error, so the last good feed stays.
func parseFeodo(body []byte, format string) (*feodoIndex, error) {
	var entries []feodoEntry
	switch format {
	case "json":
		trimmed := bytes.TrimSpace(body)
		if len(trimmed) == 0 || trimmed[0] != '[' {
			return nil, errors.New("feed is not a JSON array")
		}
		if err := json.Unmarshal(trimmed, &entries); err != nil {
			return nil, fmt.Errorf("decoding feed: %w", err)
		}
	case "csv":
		var lines []string
		for _, l := range strings.Split(string(body), "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "#") && strings.TrimSpace(l) != "" {
				lines = append(lines, l)
			}
		}
		rows, err := csv.NewReader(strings.NewReader(strings.Join(lines, "\n"))).ReadAll()
		if err != nil {
			return nil, fmt.Errorf("decoding feed: %w", err)
		}
		for i, r := range rows {
			if len(r) < 6 || (i == 0 && r[1] == "dst_ip") {
				continue
			}
			entries = append(entries, feodoEntry{FirstSeen: r[0], IP: r[1], Port: json.RawMessage(strconv.Quote(r[2])), Status: r[3], Malware: r[5]})
		}
	case "txt":
		for _, l := range strings.Split(string(body), "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				entries = append(entries, feodoEntry{IP: l, Status: "online"})
			}
		}
	}
	idx := &feodoIndex{byIP: map[netip.Addr]*FeodoData{}, raw: map[netip.Addr][]byte{}}
	for _, e := range entries {
		ip, err := ParseIP(e.IP)
		if err != nil {
			idx.skipped++
			continue
		}
		port, ok := parsePort(e.Port)
		if !ok {
			idx.skipped++
			continue
		}
		d := idx.byIP[ip]
		if d == nil {
			d = &FeodoData{Listed: true, Status: "offline", FirstSeen: e.FirstSeen}
			idx.byIP[ip] = d
		}
		if e.Status == "online" {
			d.Status = "online"
		}
		if port > 0 && !slices.Contains(d.Ports, port) {
			d.Ports = append(d.Ports, port)
			slices.Sort(d.Ports)
		}
		d.Families = appendSet(d.Families, e.Malware)
		if e.Malware != "" {
			d.MalwareFamily = e.Malware // feed is sorted by first_seen: the newest wins
		}
		if e.FirstSeen != "" && (d.FirstSeen == "" || e.FirstSeen < d.FirstSeen) {
			d.FirstSeen = e.FirstSeen
		}
		raw, _ := json.Marshal(e)
		if len(idx.raw[ip]) > 0 {
			idx.raw[ip] = append(idx.raw[ip][:len(idx.raw[ip])-1], ',')
			idx.raw[ip] = append(append(idx.raw[ip], raw...), ']')
		} else {
			idx.raw[ip] = append(append([]byte{'['}, raw...), ']')
		}
	}
	return idx, nil
}

func parsePort(raw json.RawMessage) (int, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, true
	}
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return n, n >= 0 && n < 65536
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		n, err := strconv.Atoi(s)
		return n, err == nil && n >= 0 && n < 65536
	}
	return 0, false
}

// Lookup answers from the index (listed or not, online or offline; the
// policy makes it a verdict). The first lookup before any feed loaded
// triggers the load.
func (f *Feodo) Lookup(ctx context.Context, ip netip.Addr) Result {
	res := f.lookup(ctx, ip)
	res.Verdict = f.conf.Policy.Verdict(res)
	return res
}

func (f *Feodo) lookup(ctx context.Context, ip netip.Addr) Result {
	return safely(NameFeodo, f.conf.Now(), func() Result {
		if why := f.conf.Guard.Check(ip); why != "" {
			return failed(NameFeodo, ErrSkipped, "not looked up: %s address", why)
		}
		idx := f.index.Load()
		if idx == nil {
			err := f.loadCold(ctx, func() bool { return f.index.Load() != nil }, f.refresh)
			if idx = f.index.Load(); idx == nil {
				return failed(NameFeodo, ErrNetwork, "feed never loaded: %v", err)
			}
		}
		now := f.conf.Now()
		res := Result{FetchedAt: idx.loadedAt}
		d, ok := idx.byIP[ip.Unmap()]
		if !ok {
			res.Feodo = &FeodoData{FeedAge: now.Sub(idx.loadedAt)}
			return res
		}
		cp := *d
		cp.FeedAge = now.Sub(idx.loadedAt)
		res.Feodo = &cp
		res.Raw = idx.raw[ip.Unmap()]
		return res
	})
}

// Ready reports whether Lookup answers without a download first.
func (f *Feodo) Ready() bool { return f.index.Load() != nil }

// FeedStatus reports the loaded feed's size and age and the last refresh
// error, for metrics and logs.
func (f *Feodo) FeedStatus() (entries int, age time.Duration, lastErr error) {
	lastErr = f.status()
	idx := f.index.Load()
	if idx == nil {
		return 0, 0, lastErr
	}
	return len(idx.byIP), f.conf.Now().Sub(idx.loadedAt), lastErr
}
