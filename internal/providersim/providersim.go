// Package providersim serves simulated threat-intel providers for
// benchmarks and fault tests: the four providers' real response shapes (the
// recorded fixtures), any IP answered, with a configurable latency, a
// free-tier-like rate limit answered with 429, and injected faults. It
// counts every request per provider and per IP, and every request for an
// address no provider may ever see.
//
// It is a real HTTP server on loopback: the pipeline under test reaches it
// through its configurable base URLs exactly as it reaches the providers.
package providersim

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Per-IP providers, and the bulk feed.
const (
	GreyNoise = "greynoise"
	AbuseIPDB = "abuseipdb"
	ThreatFox = "threatfox"
	Feodo     = "feodo"
)

// PerIP are the providers asked once per IP.
var PerIP = []string{GreyNoise, AbuseIPDB, ThreatFox}

// Fault is what a provider does instead of answering well.
type Fault string

// Faults a test can inject.
const (
	FaultNone    Fault = ""
	Fault500     Fault = "500"     // 500 with an HTML body
	Fault429     Fault = "429"     // 429 storm: every request, Retry-After: 1
	FaultGarbage Fault = "garbage" // 200 with bytes that are not the API's JSON
	FaultHuge    Fault = "huge"    // 200 with a 100 MB body
	FaultDrip    Fault = "drip"    // 200, one byte every 100ms, forever
	FaultHang    Fault = "hang"    // headers never come
)

// HugeBodyBytes is the size of a FaultHuge body.
const HugeBodyBytes = 100 << 20

// Config is what every provider does; SetFault and SetLatency change it
// while the server runs.
type Config struct {
	Latency       time.Duration // before each answer
	RatePerSecond float64       // per provider; over it the answer is 429. 0: no limit
	Burst         int
	// AllowDocumentationRanges accepts the fixtures' 192.0.2/24,
	// 198.51.100/24 and 203.0.113/24 addresses.
	AllowDocumentationRanges bool
}

// Server is the running simulation.
type Server struct {
	*httptest.Server
	conf    Config
	bodies  map[string][]byte
	latency atomic.Int64
	// spread, when set, gives each request its own latency instead.
	spread atomic.Pointer[func(provider, ip string) time.Duration]

	mu        sync.Mutex
	faults    map[string]Fault
	limiters  map[string]*rate.Limiter
	perIP     map[string]map[string]int  // provider → ip → requests answered
	answered  map[string]map[string]bool // provider → ip → answered without a fault
	accepted  map[string]int             // answered within the rate limit
	limited   map[string]int             // answered 429 by the rate limit
	forbidden []string                   // addresses no provider may see
	lists     listBodies                 // the bulk lists, rendered
	quota     map[string]int             // provider → requests a day before 429s
	downloads map[string]int             // bulk list → downloads
	started   chan struct{}              // closed at the first request
	startOnce sync.Once
}

// Start serves the provider fixtures of fsys (its providers/ folder, e.g.
// fixtures.FS()).
func Start(fsys fs.FS, conf Config) (*Server, error) {
	s := &Server{conf: conf, bodies: map[string][]byte{}, faults: map[string]Fault{}, limiters: map[string]*rate.Limiter{},
		started: make(chan struct{})}
	for _, name := range []string{
		"greynoise/200_malicious.json", "greynoise/200_benign_scanner.json", "greynoise/404_not_found.json",
		"greynoise/200_unknown_classification.json",
		"abuseipdb/200_malicious.json", "abuseipdb/200_suspicious.json", "abuseipdb/200_clean.json",
		"abuseipdb/200_whitelisted_scanner.json",
		"threatfox/200_ok_hit.json", "threatfox/200_no_result.json", "feodo/ipblocklist.json",
		"greynoise/429_rate_limited.json", "abuseipdb/429_rate_limited.json",
	} {
		b, err := fs.ReadFile(fsys, "providers/"+name)
		if err != nil {
			return nil, fmt.Errorf("provider fixtures: %w", err)
		}
		s.bodies[name] = b
	}
	s.latency.Store(int64(conf.Latency))
	s.Reset()
	if conf.AllowDocumentationRanges {
		s.SetLists(DocumentationLists())
	} else {
		s.SetLists(Lists{})
	}
	s.Server = httptest.NewServer(s.handler())
	return s, nil
}

// Reset forgets every count and fault, and refills the rate limits.
func (s *Server) Reset() {
	s.mu.Lock()
	s.perIP = map[string]map[string]int{}
	s.answered = map[string]map[string]bool{}
	s.accepted, s.limited = map[string]int{}, map[string]int{}
	s.forbidden = nil
	s.faults = map[string]Fault{}
	s.downloads = map[string]int{}
	s.quota = map[string]int{}
	for _, p := range append(PerIP, Feodo) {
		s.perIP[p] = map[string]int{}
		s.answered[p] = map[string]bool{}
	}
	perSecond, burst := s.conf.RatePerSecond, s.conf.Burst
	s.mu.Unlock()
	s.SetRate(perSecond, burst)
}

// SetLatency changes every provider's latency.
func (s *Server) SetLatency(d time.Duration) { s.latency.Store(int64(d)); s.spread.Store(nil) }

// SetLatencyFunc gives each request the latency fn says for its provider
// and IP (nil goes back to SetLatency's).
func (s *Server) SetLatencyFunc(fn func(provider, ip string) time.Duration) {
	if fn == nil {
		s.spread.Store(nil)
		return
	}
	s.spread.Store(&fn)
}

// MixedLatency is the held-out crash run's mix: every answer takes 20 to
// 200 ms, and for one IP in ten one provider (GreyNoise) takes slow
// instead, longer than a pipeline waits for a token.
func MixedLatency(slow time.Duration) func(provider, ip string) time.Duration {
	return func(provider, ip string) time.Duration {
		h := fnv.New32a()
		h.Write([]byte(ip))
		v := h.Sum32()
		if provider == GreyNoise && v%10 == 0 {
			return slow
		}
		h.Write([]byte(provider))
		return 20*time.Millisecond + time.Duration(h.Sum32()%180)*time.Millisecond
	}
}

// SetRate changes every provider's rate limit (0: none) and refills it.
func (s *Server) SetRate(perSecond float64, burst int) {
	s.mu.Lock()
	s.conf.RatePerSecond, s.conf.Burst = perSecond, burst
	s.limiters = map[string]*rate.Limiter{}
	for _, p := range append(PerIP, Feodo) {
		if perSecond > 0 {
			s.limiters[p] = rate.NewLimiter(rate.Limit(perSecond), max(burst, 1))
		}
	}
	s.mu.Unlock()
}

// SetDailyQuota makes provider answer its documented 429 (daily limit
// reached) once it has answered n requests since Reset, as a free tier
// does; 0 removes the quota.
func (s *Server) SetDailyQuota(provider string, n int) {
	s.mu.Lock()
	s.quota[provider] = n
	s.mu.Unlock()
}

// RequestsByIP is how many requests provider answered (not 429) per IP.
func (s *Server) RequestsByIP(provider string) map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.perIP[provider]))
	for ip, n := range s.perIP[provider] {
		out[ip] = n
	}
	return out
}

// SetFault makes provider fail with f from now on (FaultNone heals it).
func (s *Server) SetFault(provider string, f Fault) {
	s.mu.Lock()
	s.faults[provider] = f
	s.mu.Unlock()
}

// Counts are one provider's figures.
type Counts struct {
	Requests  int // every request answered without the rate limit's 429
	Limited   int // answered 429 by the rate limit
	UniqueIPs int
	MaxPerIP  int
}

// Counts reports provider's figures so far.
func (s *Server) Counts(provider string) Counts {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := Counts{Requests: s.accepted[provider], Limited: s.limited[provider], UniqueIPs: len(s.perIP[provider])}
	for _, n := range s.perIP[provider] {
		c.MaxPerIP = max(c.MaxPerIP, n)
	}
	return c
}

// PerIPCalls is the requests to the per-IP providers and the IPs asked about.
func (s *Server) PerIPCalls() (requests, ips int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, p := range PerIP {
		for ip, n := range s.perIP[p] {
			requests += n
			seen[ip] = true
		}
	}
	return requests, len(seen)
}

// Answered lists the IPs provider answered (within its rate limit, without
// a fault): each such answer must reach its IP's row.
func (s *Server) Answered(provider string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.answered[provider]))
	for ip := range s.answered[provider] {
		out = append(out, ip)
	}
	return out
}

// Forbidden lists addresses a provider was asked about that none may see:
// anything not globally routable. Tests fail when it is not empty.
func (s *Server) Forbidden() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.forbidden...)
}

// Started is closed at the first request.
func (s *Server) Started() <-chan struct{} { return s.started }

// Story is what every provider says of one IP: the simulation is
// consistent across providers, as the real ones broadly are.
type Story int

// Stories, in the share of attackers each gets (by a hash of the IP).
const (
	StoryMalicious  Story = iota // 12%: malicious everywhere, a ThreatFox IOC
	StorySuspicious              // 15%: scanning, intent unknown; a middling abuse score
	StoryBenign                  // 20%: a known benign scanner
	StoryUnseen                  // 53%: nobody has seen it
)

// StoryOf is ip's story.
func StoryOf(ip string) Story {
	h := fnv.New32a()
	h.Write([]byte(ip))
	switch v := h.Sum32() % 100; {
	case v < 12:
		return StoryMalicious
	case v < 27:
		return StorySuspicious
	case v < 47:
		return StoryBenign
	}
	return StoryUnseen
}

// fixtureIP is the address each recorded body was recorded for: the
// simulation writes the queried address in its place.
var fixtureIP = map[string]string{
	"greynoise/200_malicious.json": "203.0.113.45", "greynoise/200_benign_scanner.json": "198.51.100.23",
	"greynoise/404_not_found.json": "192.0.2.77", "greynoise/200_unknown_classification.json": "203.0.113.99",
	"abuseipdb/200_malicious.json": "203.0.113.45", "abuseipdb/200_suspicious.json": "203.0.113.99",
	"abuseipdb/200_clean.json": "192.0.2.77", "abuseipdb/200_whitelisted_scanner.json": "198.51.100.23",
	"threatfox/200_ok_hit.json": "203.0.113.45",
}

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v3/community/{ip}", func(w http.ResponseWriter, r *http.Request) {
		s.answer(w, r, GreyNoise, r.PathValue("ip"), func(st Story) (int, string) {
			switch st {
			case StoryMalicious:
				return 200, "greynoise/200_malicious.json"
			case StorySuspicious:
				return 200, "greynoise/200_unknown_classification.json"
			case StoryBenign:
				return 200, "greynoise/200_benign_scanner.json"
			}
			return 404, "greynoise/404_not_found.json"
		})
	})
	mux.HandleFunc("GET /api/v2/check", func(w http.ResponseWriter, r *http.Request) {
		s.answer(w, r, AbuseIPDB, r.URL.Query().Get("ipAddress"), func(st Story) (int, string) {
			switch st {
			case StoryMalicious:
				return 200, "abuseipdb/200_malicious.json"
			case StorySuspicious:
				return 200, "abuseipdb/200_suspicious.json"
			case StoryBenign:
				return 200, "abuseipdb/200_whitelisted_scanner.json"
			}
			return 200, "abuseipdb/200_clean.json"
		})
	})
	mux.HandleFunc("POST /api/v1/", func(w http.ResponseWriter, r *http.Request) {
		var q map[string]string
		_ = json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<16)).Decode(&q)
		s.answer(w, r, ThreatFox, q["search_term"], func(st Story) (int, string) {
			if st == StoryMalicious {
				return 200, "threatfox/200_ok_hit.json"
			}
			return 200, "threatfox/200_no_result.json"
		})
	})
	mux.HandleFunc("GET /ipblocklist.json", func(w http.ResponseWriter, r *http.Request) {
		s.answer(w, r, Feodo, "", func(Story) (int, string) { return 200, "feodo/ipblocklist.json" })
	})
	list := func(name string, body func(listBodies) []byte) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			if name == ListAbuseIPDBBlacklist && r.Header.Get("Key") == "" {
				http.Error(w, `{"errors":[{"detail":"Authentication failed.","status":401}]}`, http.StatusUnauthorized)
				return
			}
			s.mu.Lock()
			s.downloads[name]++
			b := body(s.lists)
			s.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write(b)
		}
	}
	mux.HandleFunc("GET /api/v2/blacklist", list(ListAbuseIPDBBlacklist, func(l listBodies) []byte { return l.blacklist }))
	mux.HandleFunc("GET /export/json/ip-port/recent/", list(ListThreatFoxExport, func(l listBodies) []byte { return l.export }))
	mux.HandleFunc("GET /drop/drop_v4.json", list(ListSpamhausDROP, func(l listBodies) []byte { return l.dropV4 }))
	mux.HandleFunc("GET /drop/drop_v6.json", list(ListSpamhausDROP, func(l listBodies) []byte { return l.dropV6 }))
	return mux
}

// Bulk lists the simulation serves, by their provider names.
const (
	ListAbuseIPDBBlacklist = "abuseipdb_blacklist"
	ListThreatFoxExport    = "threatfox_export"
	ListSpamhausDROP       = "spamhaus_drop"
)

// Lists are what the simulated bulk lists hold: the harness chooses, as it
// knows its attackers.
type Lists struct {
	Blacklist []string       // AbuseIPDB's blacklist, each scored 100
	Export    []string       // ThreatFox ip:port IOCs (port 443, Mirai)
	DROP      []netip.Prefix // Spamhaus DROP networks
}

type listBodies struct{ blacklist, export, dropV4, dropV6 []byte }

// SetLists replaces the bulk lists' contents (served from the next
// download on).
func (s *Server) SetLists(l Lists) {
	var b listBodies
	var buf bytes.Buffer
	buf.WriteString(`{"meta":{"generatedAt":"2026-11-30T00:00:00+00:00"},"data":[`)
	for i, ip := range l.Blacklist {
		if i > 0 {
			buf.WriteByte(',')
		}
		fmt.Fprintf(&buf, `{"ipAddress":%q,"countryCode":"NL","abuseConfidenceScore":100,"lastReportedAt":"2026-11-29T23:00:00+00:00"}`, ip)
	}
	buf.WriteString(`]}`)
	b.blacklist = bytes.Clone(buf.Bytes())
	buf.Reset()
	buf.WriteByte('{')
	for i, ip := range l.Export {
		if i > 0 {
			buf.WriteByte(',')
		}
		ap := netip.AddrPortFrom(netip.MustParseAddr(ip), 443)
		fmt.Fprintf(&buf, `%q:[{"ioc_value":%q,"ioc_type":"ip:port","threat_type":"botnet_cc","malware":"elf.mirai","malware_printable":"Mirai","first_seen_utc":"2026-11-29 10:00:00","confidence_level":100}]`,
			fmt.Sprint(1500000+i), ap.String())
	}
	buf.WriteByte('}')
	b.export = bytes.Clone(buf.Bytes())
	var v4, v6 bytes.Buffer
	for i, p := range l.DROP {
		dst := &v4
		if p.Addr().Is6() {
			dst = &v6
		}
		fmt.Fprintf(dst, `{"cidr":%q,"sblid":"SBL%d","rir":"ripencc"}`+"\n", p.String(), 600000+i)
	}
	for _, dst := range []*bytes.Buffer{&v4, &v6} {
		dst.WriteString(`{"type":"metadata","timestamp":1764460800,"copyright":"(c) 2026 The Spamhaus Project SLU (simulated)"}` + "\n")
	}
	b.dropV4, b.dropV6 = v4.Bytes(), v6.Bytes()
	s.mu.Lock()
	s.lists = b
	s.mu.Unlock()
}

// DocumentationLists are the lists the fixture-fed demo serves: the
// malicious-story addresses of the documentation ranges on AbuseIPDB's
// blacklist and ThreatFox's export, and those of 192.0.2.0/24 in DROP, so
// that bulk lists answer some attackers as they would in production.
func DocumentationLists() Lists {
	var l Lists
	for _, base := range []string{"203.0.113.", "198.51.100.", "192.0.2."} {
		for i := 1; i < 255; i++ {
			ip := base + fmt.Sprint(i)
			if StoryOf(ip) != StoryMalicious {
				continue
			}
			l.Blacklist = append(l.Blacklist, ip)
			l.Export = append(l.Export, ip)
			if base == "192.0.2." {
				l.DROP = append(l.DROP, netip.PrefixFrom(netip.MustParseAddr(ip), 32))
			}
		}
	}
	return l
}

// Downloads counts a bulk list's downloads (each part of DROP counts).
func (s *Server) Downloads(list string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.downloads[list]
}

// answer counts the request, applies the latency, the rate limit and any
// fault, then writes the fixture pick chooses for ip's story, about ip.
func (s *Server) answer(w http.ResponseWriter, r *http.Request, provider, ip string, pick func(Story) (int, string)) {
	s.startOnce.Do(func() { close(s.started) })
	if ip != "" && !s.routable(ip) {
		s.mu.Lock()
		s.forbidden = append(s.forbidden, provider+":"+ip)
		s.mu.Unlock()
		http.Error(w, "forbidden address", http.StatusBadRequest)
		return
	}
	d := time.Duration(s.latency.Load())
	if fn := s.spread.Load(); fn != nil {
		d = (*fn)(provider, ip)
	}
	if d > 0 {
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
	}
	s.mu.Lock()
	fault := s.faults[provider]
	lim := s.limiters[provider]
	if q := s.quota[provider]; q > 0 && s.accepted[provider] >= q {
		s.limited[provider]++
		s.mu.Unlock()
		if body := s.bodies[provider+"/429_rate_limited.json"]; body != nil {
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Retry-After", "3600")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = w.Write(body)
			return
		}
		s.fail(w, r, Fault429)
		return
	}
	if fault != Fault429 && (lim == nil || lim.Allow()) {
		s.accepted[provider]++
		if ip != "" {
			s.perIP[provider][ip]++
			if fault == FaultNone {
				s.answered[provider][ip] = true
			}
		}
	} else {
		s.limited[provider]++
		fault = Fault429
	}
	s.mu.Unlock()

	if s.fail(w, r, fault) {
		return
	}
	status, name := pick(StoryOf(ip))
	body := s.bodies[name]
	if from := fixtureIP[name]; from != "" {
		body = bytes.ReplaceAll(body, []byte(`"`+from), []byte(`"`+ip))
	}
	if provider == AbuseIPDB {
		w.Header().Set("X-RateLimit-Limit", "1000")
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// fail writes the fault's answer; false when there is none.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, f Fault) bool {
	switch f {
	case FaultNone:
		return false
	case Fault429:
		w.Header().Set("Retry-After", "1")
		http.Error(w, `{"errors":[{"detail":"Daily rate limit exceeded"}]}`, http.StatusTooManyRequests)
	case Fault500:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("<html><body>500 Internal Server Error</body></html>"))
	case FaultGarbage:
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"data": [1, 2, {"ipAddress": }` + strings.Repeat("\x00\xff", 64)))
	case FaultHuge:
		w.Header().Set("Content-Type", "application/json")
		chunk := []byte(`{"padding":"` + strings.Repeat("x", 1<<20-20) + `"},`)
		for sent := 0; sent < HugeBodyBytes; sent += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return true
			}
		}
	case FaultDrip:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		for {
			if _, err := w.Write([]byte(" ")); err != nil || rc.Flush() != nil {
				return true
			}
			select {
			case <-time.After(100 * time.Millisecond):
			case <-r.Context().Done():
				return true
			}
		}
	case FaultHang:
		<-r.Context().Done()
	}
	return true
}

var documentation = []netip.Prefix{
	netip.MustParsePrefix("192.0.2.0/24"), netip.MustParsePrefix("198.51.100.0/24"), netip.MustParsePrefix("203.0.113.0/24"),
}

// routable is deliberately independent of the pipeline's own guard: a
// global unicast address outside the private, shared, benchmarking and
// documentation ranges.
func (s *Server) routable(ip string) bool {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.Zone() != "" || a.Is4In6() || !a.IsGlobalUnicast() || a.IsPrivate() {
		return false
	}
	for _, p := range []netip.Prefix{netip.MustParsePrefix("100.64.0.0/10"), netip.MustParsePrefix("198.18.0.0/15"),
		netip.MustParsePrefix("2001:db8::/32"), netip.MustParsePrefix("240.0.0.0/4")} {
		if p.Contains(a) {
			return false
		}
	}
	for _, p := range documentation {
		if p.Contains(a) {
			return s.conf.AllowDocumentationRanges
		}
	}
	return true
}
