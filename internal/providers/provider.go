// Package providers looks attacker IPs up in free-tier threat-intel services
// (GreyNoise Community, AbuseIPDB, abuse.ch Feodo Tracker and ThreatFox)
// while staying inside their limits, and never sends them an address that
// is not globally routable.
//
// It is plain Go: no Benthos types. A lookup never returns an error and never
// panics: failure is a Result with an ErrorKind, because partial success is
// the normal case for free tiers under daily caps.
package providers

import (
	"context"
	"fmt"
	"net/netip"
	"time"
)

// Verdict is one provider's opinion of an IP. The zero value, VerdictNone,
// is "no opinion", which is not "benign".
type Verdict string

// Verdicts, strongest first.
const (
	VerdictMalicious  Verdict = "malicious"
	VerdictSuspicious Verdict = "suspicious"
	VerdictBenign     Verdict = "benign"
	VerdictUnknown    Verdict = "unknown"
	VerdictNone       Verdict = ""
)

// Rank orders verdicts for aggregation: higher is stronger.
func (v Verdict) Rank() int {
	switch v {
	case VerdictMalicious:
		return 4
	case VerdictSuspicious:
		return 3
	case VerdictBenign:
		return 2
	case VerdictUnknown:
		return 1
	}
	return 0
}

// ErrorKind says why a lookup produced no answer.
type ErrorKind string

// Error kinds.
const (
	ErrNone           ErrorKind = ""
	ErrNetwork        ErrorKind = "network"
	ErrTimeout        ErrorKind = "timeout"
	ErrHTTPStatus     ErrorKind = "http_status"
	ErrParse          ErrorKind = "parse"
	ErrAuth           ErrorKind = "auth"
	ErrRateLimited    ErrorKind = "rate_limited"
	ErrQuotaExhausted ErrorKind = "quota_exhausted"
	ErrDisabled       ErrorKind = "disabled"
	ErrSkipped        ErrorKind = "skipped"
	// ErrCovered: not asked, because a bulk list named in the provider's
	// skip_when lists the IP already; no per-IP call spent on it.
	ErrCovered ErrorKind = "covered"
)

// Retriable reports whether asking again later may give an answer:
// disabled, skipped and covered are final for this configuration and IP.
func (k ErrorKind) Retriable() bool {
	return k != ErrNone && k != ErrDisabled && k != ErrSkipped && k != ErrCovered
}

// Provider names.
const (
	NameGreyNoise = "greynoise"
	NameAbuseIPDB = "abuseipdb"
	NameFeodo     = "feodo"
	NameThreatFox = "threatfox"
)

// NumProviders is how many providers exist (the four per-IP or feed
// providers DECNET has, then the bulk lists); Index numbers them.
const NumProviders = 7

// Index is a provider's number in 0..NumProviders-1, or -1 for an unknown
// name: rows keep per-provider state in arrays, not maps.
func Index(name string) int {
	switch name {
	case NameGreyNoise:
		return 0
	case NameAbuseIPDB:
		return 1
	case NameFeodo:
		return 2
	case NameThreatFox:
		return 3
	case NameAbuseIPDBBlacklist:
		return 4
	case NameThreatFoxExport:
		return 5
	case NameSpamhausDROP:
		return 6
	}
	return -1
}

// Result is one provider's answer for one IP. Exactly one of the typed
// fields is set on success.
type Result struct {
	Provider  string
	Verdict   Verdict
	GreyNoise *GreyNoiseData
	AbuseIPDB *AbuseIPDBData
	Feodo     *FeodoData
	ThreatFox *ThreatFoxData
	List      *ListData // a bulk list's answer
	// Raw is the response body (or the matching feed entries), capped at
	// MaxRawBytes.
	Raw       []byte
	FetchedAt time.Time
	Latency   time.Duration
	ErrKind   ErrorKind
	Err       string
	// Requests is how many HTTP requests the lookup sent (retries
	// included): 0 when a limit or the guard answered, or for a feed.
	Requests int
}

// OK reports whether the provider answered.
func (r Result) OK() bool { return r.ErrKind == ErrNone }

// MaxRawBytes caps the raw response kept in a result (and so in a row).
const MaxRawBytes = 16 << 10

// Provider looks up one address.
type Provider interface {
	Name() string
	// Lookup never panics and reports every failure inside the Result.
	Lookup(ctx context.Context, ip netip.Addr) Result
}

func failed(provider string, kind ErrorKind, format string, args ...any) Result {
	return Result{Provider: provider, ErrKind: kind, Err: fmt.Sprintf(format, args...)}
}

// safely runs a lookup, turning a panic into a recorded error so that one
// provider's bug cannot take the pipeline down.
func safely(name string, start time.Time, fn func() Result) (res Result) {
	defer func() {
		if p := recover(); p != nil {
			res = failed(name, ErrParse, "provider panicked: %v", p)
		}
		res.Provider = name
		if res.FetchedAt.IsZero() {
			res.FetchedAt = start
		}
		res.Latency = time.Since(start)
		if len(res.Raw) > MaxRawBytes {
			res.Raw = res.Raw[:MaxRawBytes]
		}
	}()
	return fn()
}

// fillDefaults gives a provider's clock, egress guard and verdict policy
// their defaults: the wall clock, the built-in guard, DECNET's rules.
func fillDefaults(now *func() time.Time, guard **Guard, policy **Policy) {
	if *now == nil {
		*now = time.Now
	}
	if *guard == nil {
		*guard = &Guard{}
	}
	if *policy == nil {
		p := DECNETPolicy()
		*policy = &p
	}
}

// Decode reads one per-IP provider's answer about ip (its HTTP status and
// body) as the provider would, and gives it its verdict under policy:
// for tools that send the requests themselves (the benchmark's model of
// DECNET's seed worker), so that they read answers by these rules and no
// copy of them.
func Decode(provider string, status int, body []byte, ip netip.Addr, policy Policy, now time.Time) Result {
	var res Result
	switch provider {
	case NameGreyNoise:
		res = decodeGreyNoise(status, body, now)
	case NameAbuseIPDB:
		res = decodeAbuseIPDB(status, body, now)
	case NameThreatFox:
		res = decodeThreatFox(status, body, ip, now)
	default:
		return failed(provider, ErrParse, "no decoder for provider %q", provider)
	}
	res.Provider = provider
	res.Verdict = policy.Verdict(res)
	return res
}
