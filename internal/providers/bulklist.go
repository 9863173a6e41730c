package providers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gaissmai/bart"
)

// Bulk list provider names: lists downloaded a few times a day that answer
// any number of IPs without a request per IP.
const (
	NameAbuseIPDBBlacklist = "abuseipdb_blacklist"
	NameThreatFoxExport    = "threatfox_export"
	NameSpamhausDROP       = "spamhaus_drop"
)

// ListNames are the bulk lists, in their Index order.
var ListNames = []string{NameAbuseIPDBBlacklist, NameThreatFoxExport, NameSpamhausDROP}

// ListIndex is a bulk list's number in 0..len(ListNames)-1, or -1.
func ListIndex(name string) int { return slices.Index(ListNames, name) }

// ListData is what a bulk list says of an IP.
type ListData struct {
	Listed bool `json:"listed"`
	// Score is the list's confidence in its entry: AbuseIPDB's abuse
	// confidence score, ThreatFox's highest IOC confidence level; nil for
	// a list without one (Spamhaus) or an IP not listed.
	Score *int `json:"score,omitempty"`
	// Tags say why it is listed: ThreatFox's malware families, Spamhaus'
	// SBL ids; sorted, without repeats.
	Tags []string `json:"tags,omitempty"`
	// FeedAge is how old the copy of the list that answered is.
	FeedAge time.Duration `json:"feed_age"`
}

// Feed is a provider answered from a list held in memory, refreshed in the
// background: it never sends a request per IP, so per-IP providers may be
// skipped for what it lists (skip_when).
type Feed interface {
	Provider
	// FeedStatus is the loaded list's size and age and the last refresh
	// error.
	FeedStatus() (entries int, age time.Duration, lastErr error)
	// Ready reports whether Lookup answers from memory now, without a
	// download first.
	Ready() bool
	Start()
	Stop()
}

// BulkListConfig configures a bulk list.
type BulkListConfig struct {
	// URLs of the list's parts (Spamhaus has one per address family):
	// http(s):// or file:// for air-gapped sites.
	URLs []string
	// Key authenticates the download (AbuseIPDB's Key, abuse.ch's
	// Auth-Key). AbuseIPDB's blacklist and ThreatFox's export need one:
	// without it they are disabled.
	Key             string
	RefreshInterval time.Duration
	// CacheDir keeps each part's last good copy on disk.
	CacheDir string
	// MinScore is the score of an entry the list gives none (AbuseIPDB's
	// plaintext blacklist): the confidenceMinimum it was downloaded with,
	// so its verdict follows what was asked, not a guess.
	MinScore     int
	Client       *http.Client
	Guard        *Guard
	MaxBodyBytes int64 // per part; default 32 MiB
	Timeout      time.Duration
	Now          func() time.Time
	Policy       *Policy
}

// BulkList answers lookups from a prefix table (gaissmai/bart) of a
// downloaded list: single addresses and whole networks alike. A failed
// refresh of a part keeps its last good copy in service.
type BulkList struct {
	refresher
	name     string
	conf     BulkListConfig
	parse    func([]byte) ([]listItem, error)
	needsKey bool
	sources  []*feedSource

	index atomic.Pointer[listIndex]

	mu    sync.Mutex
	parts []listPart // per source, under mu
}

type listPart struct {
	items []listItem
	at    time.Time
	ok    bool
}

type listItem struct {
	prefix netip.Prefix
	score  int // -1: none
	tags   []string
	raw    []byte
}

type listEntry struct {
	score int
	tags  []string
	raw   []byte
}

type listIndex struct {
	table    bart.Table[*listEntry]
	loadedAt time.Time // of the oldest part
}

// DefaultAbuseIPDBBlacklistLimits: the free tier allows 5 blacklist
// downloads a day, of up to 10,000 IPs.
const (
	DefaultAbuseIPDBBlacklistRefresh = 6 * time.Hour
	DefaultThreatFoxExportURL        = "https://threatfox.abuse.ch/export/json/ip-port/recent/"
	DefaultThreatFoxExportRefresh    = time.Hour
	DefaultSpamhausDROPRefresh       = 12 * time.Hour
	// MinSpamhausDROPRefresh: Spamhaus firewalls hosts that download more
	// often than hourly.
	MinSpamhausDROPRefresh = time.Hour
)

// DefaultSpamhausDROPURLs are DROP's two parts (EDROP was merged into DROP
// in 2024).
var DefaultSpamhausDROPURLs = []string{"https://www.spamhaus.org/drop/drop_v4.json", "https://www.spamhaus.org/drop/drop_v6.json"}

// AbuseIPDBBlacklistURL is the blacklist download of base (the API's base
// URL) for IPs at or above confidenceMinimum, at most limit of them.
func AbuseIPDBBlacklistURL(base string, confidenceMinimum, limit int) string {
	if base == "" {
		base = "https://api.abuseipdb.com"
	}
	q := url.Values{}
	q.Set("confidenceMinimum", strconv.Itoa(confidenceMinimum))
	q.Set("limit", strconv.Itoa(limit))
	return strings.TrimRight(base, "/") + "/api/v2/blacklist?" + q.Encode()
}

// NewAbuseIPDBBlacklist is AbuseIPDB's blacklist: an IP on it is answered
// with its confidence score, without a /check call.
func NewAbuseIPDBBlacklist(c BulkListConfig) *BulkList {
	key, floor := c.Key, c.MinScore
	parse := func(body []byte) ([]listItem, error) {
		items, err := parseAbuseIPDBBlacklist(body)
		for i := range items {
			if items[i].score < 0 && floor > 0 {
				items[i].score = floor
			}
		}
		return items, err
	}
	return newBulkList(NameAbuseIPDBBlacklist, c, DefaultAbuseIPDBBlacklistRefresh, 0, true, parse,
		func(r *http.Request) {
			r.Header.Set("Key", key)
			r.Header.Set("Accept", "application/json")
		})
}

// NewThreatFoxExport is ThreatFox's export of recent ip:port IOCs: a listed
// IP is answered without a search_ioc call. It needs the abuse.ch Auth-Key
// (abuse.ch asks one of every client): without it the list is disabled, a
// final status, rather than failing on every row for ever.
func NewThreatFoxExport(c BulkListConfig) *BulkList {
	if len(c.URLs) == 0 {
		c.URLs = []string{DefaultThreatFoxExportURL}
	}
	key := c.Key
	return newBulkList(NameThreatFoxExport, c, DefaultThreatFoxExportRefresh, 0, true, parseThreatFoxExport,
		func(r *http.Request) { r.Header.Set("Auth-Key", key) })
}

// NewSpamhausDROP is Spamhaus' DROP list: networks hijacked or run by
// criminals, looked up by longest prefix.
func NewSpamhausDROP(c BulkListConfig) *BulkList {
	if len(c.URLs) == 0 {
		c.URLs = DefaultSpamhausDROPURLs
	}
	return newBulkList(NameSpamhausDROP, c, DefaultSpamhausDROPRefresh, MinSpamhausDROPRefresh, false, parseSpamhausDROP, nil)
}

func newBulkList(name string, c BulkListConfig, refresh, minRefresh time.Duration, needsKey bool, parse func([]byte) ([]listItem, error), header func(*http.Request)) *BulkList {
	if c.RefreshInterval <= 0 {
		c.RefreshInterval = refresh
	}
	c.RefreshInterval = max(c.RefreshInterval, minRefresh)
	if c.Client == nil {
		c.Client = DefaultHTTPClient()
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 32 << 20
	}
	if c.Timeout <= 0 {
		c.Timeout = time.Minute
	}
	fillDefaults(&c.Now, &c.Guard, &c.Policy)
	l := &BulkList{refresher: newRefresher(c.Now), name: name, conf: c, parse: parse, needsKey: needsKey}
	for i, u := range c.URLs {
		l.sources = append(l.sources, &feedSource{url: u, setHeader: header, client: c.Client, maxBody: c.MaxBodyBytes,
			timeout: c.Timeout, cacheFile: cacheFileName(c.CacheDir, name, i)})
	}
	l.parts = make([]listPart, len(l.sources))
	return l
}

// Name is the list's provider name.
func (l *BulkList) Name() string { return l.name }

// RefreshInterval is how often the list is downloaded.
func (l *BulkList) RefreshInterval() time.Duration { return l.conf.RefreshInterval }

func (l *BulkList) disabled() bool { return l.needsKey && l.conf.Key == "" }

// Start serves the copies on disk at once, if any, and refreshes the list
// every RefreshInterval until Stop (at once when a copy is older than
// that or missing).
func (l *BulkList) Start() {
	if l.disabled() {
		return
	}
	l.loadSaved()
	l.every(l.conf.RefreshInterval, l.conf.Timeout*time.Duration(len(l.sources)), l.fresh, l.refresh)
}

// fresh reports whether every part is loaded and younger than the refresh
// interval.
func (l *BulkList) fresh() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.parts {
		if !p.ok || l.conf.Now().Sub(p.at) >= l.conf.RefreshInterval {
			return false
		}
	}
	return true
}

// loadSaved serves every part's copy on disk that no download replaced.
func (l *BulkList) loadSaved() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, src := range l.sources {
		if l.parts[i].ok {
			continue
		}
		body, at, err := src.saved()
		if err != nil {
			continue
		}
		if items, err := l.parse(body); err == nil {
			l.parts[i] = listPart{items: items, at: at, ok: true}
		}
	}
	l.rebuildLocked()
}

// Refresh downloads every part now (one refresh at a time: concurrent
// callers share it). A part that fails keeps its last good copy, from
// memory or disk; the error says which failed.
func (l *BulkList) Refresh(ctx context.Context) error { return l.do(ctx, l.refresh) }

func (l *BulkList) refresh(ctx context.Context) error {
	var errs []error
	for i, src := range l.sources {
		l.mu.Lock()
		have := l.parts[i].ok
		l.mu.Unlock()
		body, notModified, err := src.fetch(ctx, have)
		now := l.conf.Now()
		switch {
		case err != nil:
		case notModified && have:
			l.mu.Lock()
			l.parts[i].at = now
			l.mu.Unlock()
			src.touch(now)
			continue
		case notModified:
			err = errors.New("not modified, but none loaded yet")
		default:
			var items []listItem
			items, err = l.parse(body)
			if err == nil && len(items) == 0 && have && len(l.partItems(i)) > 0 {
				// A list does not empty itself between two downloads: a
				// glitch at the provider must not unlist every attacker.
				err = errors.New("the download lists nothing, the copy in service did: keeping it")
			}
			if err == nil {
				l.mu.Lock()
				l.parts[i] = listPart{items: items, at: now, ok: true}
				l.mu.Unlock()
				if serr := src.save(body, now); serr != nil {
					errs = append(errs, fmt.Errorf("%s: loaded, but not saved: %w", redactURL(src.url), serr))
				}
				continue
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", redactURL(src.url), err))
	}
	l.loadSaved() // parts never loaded: their copies on disk, and rebuild
	return errors.Join(errs...)
}

func (l *BulkList) partItems(i int) []listItem {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.parts[i].items
}

// rebuildLocked makes the index from the loaded parts. A list with a part
// missing still answers from the others: a network listed in them is
// listed.
func (l *BulkList) rebuildLocked() {
	idx := &listIndex{}
	var entries []*listEntry
	loaded := false
	for _, p := range l.parts {
		if !p.ok {
			continue
		}
		if !loaded || p.at.Before(idx.loadedAt) {
			idx.loadedAt = p.at
		}
		loaded = true
		for _, it := range p.items {
			e, ok := idx.table.Get(it.prefix)
			if !ok {
				e = &listEntry{score: -1}
				idx.table.Insert(it.prefix, e)
				entries = append(entries, e)
			}
			e.score = max(e.score, it.score)
			for _, t := range it.tags {
				e.tags = appendSet(e.tags, t)
			}
			e.raw = appendJSONItem(e.raw, it.raw)
		}
	}
	for _, e := range entries {
		slices.Sort(e.tags) // once per entry, not once per item merged into it
	}
	if loaded {
		l.index.Store(idx)
	}
}

// appendJSONItem adds item to the JSON array list (started when empty).
func appendJSONItem(list, item []byte) []byte {
	if len(item) == 0 {
		return list
	}
	if len(list) == 0 {
		return append(append([]byte{'['}, item...), ']')
	}
	return append(append(append(list[:len(list)-1], ','), item...), ']')
}

// Lookup answers from the list: listed or not (the policy makes it a
// verdict). The first lookup before any copy loaded triggers a download.
func (l *BulkList) Lookup(ctx context.Context, ip netip.Addr) Result {
	res := safely(l.name, l.conf.Now(), func() Result {
		if why := l.conf.Guard.Check(ip); why != "" {
			return failed(l.name, ErrSkipped, "not looked up: %s address", why)
		}
		if l.disabled() {
			return failed(l.name, ErrDisabled, "no key configured")
		}
		idx := l.index.Load()
		if idx == nil {
			err := l.loadCold(ctx, func() bool { return l.index.Load() != nil }, l.refresh)
			if idx = l.index.Load(); idx == nil {
				return failed(l.name, ErrNetwork, "list never loaded: %v", err)
			}
		}
		res := Result{FetchedAt: idx.loadedAt}
		d := &ListData{FeedAge: l.conf.Now().Sub(idx.loadedAt)}
		if e, ok := idx.table.Lookup(ip.Unmap()); ok {
			d.Listed, d.Tags, res.Raw = true, e.tags, e.raw
			if e.score >= 0 {
				s := e.score
				d.Score = &s
			}
		}
		res.List = d
		return res
	})
	res.Verdict = l.conf.Policy.Verdict(res)
	return res
}

// FeedStatus reports the loaded list's size and age and the last refresh
// error.
// Ready reports whether Lookup answers without a download first.
func (l *BulkList) Ready() bool { return l.disabled() || l.index.Load() != nil }

func (l *BulkList) FeedStatus() (entries int, age time.Duration, lastErr error) {
	if l.disabled() {
		return 0, 0, errDisabledList
	}
	lastErr = l.status()
	idx := l.index.Load()
	if idx == nil {
		return 0, 0, lastErr
	}
	return idx.table.Size(), l.conf.Now().Sub(idx.loadedAt), lastErr
}

// errDisabledList is a keyless list's status: it downloads nothing.
var errDisabledList = errors.New("disabled: no key configured")

// redactURL is a feed's URL for errors and logs: without its query, where
// a key may be.
func redactURL(u string) string {
	if i := strings.IndexByte(u, '?'); i >= 0 {
		return u[:i]
	}
	return u
}

func hostPrefix(ip netip.Addr) netip.Prefix {
	ip = ip.Unmap()
	return netip.PrefixFrom(ip, ip.BitLen())
}

// parseAbuseIPDBBlacklist reads /api/v2/blacklist: JSON (data[] of
// ipAddress and abuseConfidenceScore) or plaintext, one IP per line.
func parseAbuseIPDBBlacklist(body []byte) ([]listItem, error) {
	trimmed := strings.TrimSpace(string(body))
	if !strings.HasPrefix(trimmed, "{") {
		var out []listItem
		for _, line := range strings.Split(trimmed, "\n") {
			if ip, err := ParseIP(strings.TrimSpace(line)); err == nil {
				out = append(out, listItem{prefix: hostPrefix(ip), score: -1})
			}
		}
		if len(out) == 0 && trimmed != "" {
			return nil, errors.New("blacklist: no address in a plaintext body")
		}
		return out, nil
	}
	var doc struct {
		Data []struct {
			IP             string  `json:"ipAddress"`
			Score          *int    `json:"abuseConfidenceScore"`
			CountryCode    *string `json:"countryCode,omitempty"`
			LastReportedAt *string `json:"lastReportedAt,omitempty"`
		} `json:"data"`
		Errors []struct {
			Detail string `json:"detail"`
		} `json:"errors"`
	}
	if err := json.Unmarshal([]byte(trimmed), &doc); err != nil {
		return nil, fmt.Errorf("blacklist: %w", err)
	}
	if len(doc.Errors) > 0 {
		return nil, fmt.Errorf("blacklist: AbuseIPDB says: %s", doc.Errors[0].Detail)
	}
	if doc.Data == nil {
		return nil, errors.New("blacklist: no data array")
	}
	out := make([]listItem, 0, len(doc.Data))
	for _, d := range doc.Data {
		ip, err := ParseIP(d.IP)
		if err != nil || d.Score == nil || *d.Score < 0 || *d.Score > 100 {
			continue
		}
		raw, _ := json.Marshal(d)
		out = append(out, listItem{prefix: hostPrefix(ip), score: *d.Score, raw: raw})
	}
	return out, nil
}

type threatFoxExportEntry struct {
	IOC        string          `json:"ioc_value"`
	IOCType    string          `json:"ioc_type"`
	ThreatType string          `json:"threat_type"`
	Malware    string          `json:"malware_printable"`
	Confidence json.RawMessage `json:"confidence_level"`
	FirstSeen  string          `json:"first_seen_utc,omitempty"`
}

// parseThreatFoxExport reads ThreatFox's JSON export ({"<id>": [entry]})
// or an API answer ({"query_status": "ok", "data": [entry]}); only ip:port
// IOCs become entries.
func parseThreatFoxExport(body []byte) ([]listItem, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	var entries []threatFoxExportEntry
	if st, ok := doc["query_status"]; ok {
		var status string
		_ = json.Unmarshal(st, &status)
		switch status {
		case "ok":
			if err := json.Unmarshal(doc["data"], &entries); err != nil {
				return nil, fmt.Errorf("export: data: %w", err)
			}
		case "no_result":
		default:
			return nil, fmt.Errorf("export: ThreatFox says %q", status)
		}
	} else {
		for id, v := range doc {
			var es []threatFoxExportEntry
			if err := json.Unmarshal(v, &es); err != nil {
				return nil, fmt.Errorf("export: entry %q: %w", id, err)
			}
			entries = append(entries, es...)
		}
	}
	out := make([]listItem, 0, len(entries))
	for _, e := range entries {
		if e.IOCType != "" && e.IOCType != "ip:port" {
			continue
		}
		ap, err := netip.ParseAddrPort(e.IOC)
		if err != nil {
			continue
		}
		ip := ap.Addr().Unmap()
		if _, err := ParseIP(ip.String()); err != nil {
			continue
		}
		score := -1
		var n int
		if json.Unmarshal(e.Confidence, &n) == nil {
			score = n
		} else if s, err := strconv.Unquote(string(e.Confidence)); err == nil {
			if n, err := strconv.Atoi(s); err == nil {
				score = n
			}
		}
		if score > 100 || score < -1 {
			score = -1
		}
		var tags []string
		if e.Malware != "" {
			tags = []string{e.Malware}
		}
		raw, _ := json.Marshal(e)
		out = append(out, listItem{prefix: hostPrefix(ip), score: score, tags: tags, raw: raw})
	}
	return out, nil
}

// minListedBits is the widest network a list may name: a /8 of IPv4, a /16
// of IPv6 (DROP's largest entries are far narrower).
func minListedBits(a netip.Addr) int {
	if a.Is4() {
		return 8
	}
	return 16
}

// parseSpamhausDROP reads DROP as NDJSON ({"cidr","sblid","rir"} per line,
// a last metadata line) or as the older text (`cidr ; SBLid`, `;`
// comments).
func parseSpamhausDROP(body []byte) ([]listItem, error) {
	var out []listItem
	lines, bad := 0, 0
	for _, line := range strings.Split(string(body), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, ";") || strings.HasPrefix(line, "#") {
			continue
		}
		lines++
		var cidr, sbl string
		var raw []byte
		if strings.HasPrefix(line, "{") {
			var rec struct {
				CIDR  string `json:"cidr"`
				SBLID string `json:"sblid"`
				RIR   string `json:"rir,omitempty"`
				Type  string `json:"type,omitempty"`
			}
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				bad++
				continue
			}
			if rec.Type == "metadata" {
				continue
			}
			cidr, sbl = rec.CIDR, rec.SBLID
			raw, _ = json.Marshal(rec)
		} else {
			cidr, sbl, _ = strings.Cut(line, ";")
			cidr, sbl = strings.TrimSpace(cidr), strings.TrimSpace(sbl)
			raw, _ = json.Marshal(map[string]string{"cidr": cidr, "sblid": sbl})
		}
		pfx, err := netip.ParsePrefix(cidr)
		if err != nil || pfx.Bits() < minListedBits(pfx.Addr()) {
			// Unreadable, or wider than any allocation DROP lists: a
			// damaged or tampered list must not make half the Internet
			// malicious and spare every per-IP call on it.
			bad++
			continue
		}
		var tags []string
		if sbl != "" {
			tags = []string{sbl}
		}
		out = append(out, listItem{prefix: pfx.Masked(), score: -1, tags: tags, raw: raw})
	}
	if lines > 0 && len(out) == 0 && bad > 0 {
		return nil, errors.New("drop: no network could be read")
	}
	return out, nil
}
