package providers

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync/atomic"
	"time"
)

// Common is what every HTTP provider needs besides its own fields.
type Common struct {
	BaseURL string
	Limits  Limits
	Guard   *Guard
	Client  *http.Client // default: a client with a pooled transport
	Budget  *BudgetStore // optional: persists daily budgets
	Shared  *Shared      // optional: shares daily budgets with other replicas
	Policy  *Policy      // makes answers verdicts; default DECNET's rules
	Now     func() time.Time
}

// DefaultHTTPClient keeps enough idle connections per host for parallel
// lookups: Go's default of 2 churns connections (PERF-NOTES: 13k vs 34k
// req/s). TLS is verified (the standard library default).
func DefaultHTTPClient() *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 64
	t.MaxIdleConns = 256
	return &http.Client{Transport: t, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse // a redirect is an answer, not an invitation
	}}
}

// httpProvider is the shared machinery: guard, limits, timeout, size cap,
// retries, and quota headers. A provider embeds it and sets ask, its own
// lookup; Name and Lookup come from here.
type httpProvider struct {
	name   string
	common Common
	gate   *gate
	ask    func(ctx context.Context, ip netip.Addr) Result
	keyID  string // KeyID of the provider's API key
	// silent429 is what a 429 that does not say when to retry (no
	// Retry-After, no X-RateLimit-Reset) means: how long to hold the
	// provider back, and why. Default: a minute's rate limit.
	silent429 func(now time.Time) (until time.Time, kind ErrorKind)
}

// rateLimitedForAMinute is a silent 429's meaning unless a provider knows
// better.
func rateLimitedForAMinute(now time.Time) (time.Time, ErrorKind) {
	return now.Add(time.Minute), ErrRateLimited
}

// Name is the provider's name, as in results and metrics.
func (p *httpProvider) Name() string { return p.name }

// Lookup asks the provider about ip; a panic in it becomes a recorded error.
func (p *httpProvider) Lookup(ctx context.Context, ip netip.Addr) Result {
	var sent atomic.Int32
	ctx = context.WithValue(ctx, sentKey{}, &sent)
	res := safely(p.name, p.common.Now(), func() Result { return p.ask(ctx, ip) })
	res.Requests = int(sent.Load())
	res.Verdict = p.common.Policy.Verdict(res)
	return res
}

// sentKey carries a lookup's count of requests sent, retries included.
type sentKey struct{}

// KeyID names an API key in metrics without revealing it: the first 8 hex
// digits of its SHA-256, or "none" for keyless use. A budget belongs to a
// key, so a rotated key is a new series.
func KeyID(key string) string {
	if key == "" {
		return "none"
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:4])
}

// newHTTPProvider is the machinery of provider name using API key key
// (empty: keyless), which names its budget in metrics (KeyID).
func newHTTPProvider(name, key string, c Common) *httpProvider {
	if c.Client == nil {
		c.Client = DefaultHTTPClient()
	}
	if c.Limits.Timeout <= 0 {
		c.Limits.Timeout = 10 * time.Second
	}
	if c.Limits.MaxBodyBytes <= 0 {
		c.Limits.MaxBodyBytes = 1 << 20
	}
	fillDefaults(&c.Now, &c.Guard, &c.Policy)
	return &httpProvider{name: name, keyID: KeyID(key), common: c, gate: newGate(name, c.Limits, c.Budget, c.Shared, c.Now),
		silent429: rateLimitedForAMinute}
}

// Remaining is today's budget left, or -1 when unlimited.
func (p *httpProvider) Remaining() int { return p.gate.Remaining() }

// Quota is the provider's standing against its limits now.
func (p *httpProvider) Quota() Quota {
	q := p.gate.quota()
	q.KeyID = p.keyID
	return q
}

// DailyBudget is the configured daily budget, 0 when unlimited.
func (p *httpProvider) DailyBudget() int { return p.common.Limits.DailyBudget }

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request built by build after the address passed the guard
// and the limits, retrying network errors and 5xx up to Limits.Retries.
// On failure it returns a Result describing it, with the last response when
// there was one (a 429's body and headers say what kind of limit it was).
func (p *httpProvider) do(ctx context.Context, ip netip.Addr, build func(ctx context.Context) (*http.Request, error)) (*response, *Result) {
	if why := p.common.Guard.Check(ip); why != "" {
		r := failed(p.name, ErrSkipped, "not sent: %s address", why)
		return nil, &r
	}
	var last Result
	var lastResp *response
	for attempt := 0; attempt <= p.common.Limits.Retries; attempt++ {
		resp, res := p.once(ctx, build)
		if res == nil {
			return resp, nil
		}
		last, lastResp = *res, resp
		if (res.ErrKind != ErrNetwork && !(res.ErrKind == ErrHTTPStatus && resp != nil && resp.status >= 500)) || ctx.Err() != nil {
			break
		}
	}
	return lastResp, &last
}

func (p *httpProvider) once(ctx context.Context, build func(ctx context.Context) (*http.Request, error)) (*response, *Result) {
	release, kind, why := p.gate.acquire(ctx)
	if kind != ErrNone {
		r := Result{Provider: p.name, ErrKind: kind, Err: why} // most of a storm's lookups: no formatting
		return nil, &r
	}
	defer release()
	rctx, cancel := context.WithTimeout(ctx, p.common.Limits.Timeout)
	defer cancel()
	req, err := build(rctx)
	if err != nil {
		r := failed(p.name, ErrParse, "building request: %v", err)
		return nil, &r
	}
	if n, ok := ctx.Value(sentKey{}).(*atomic.Int32); ok {
		n.Add(1)
	}
	hr, err := p.common.Client.Do(req)
	if err != nil {
		r := failed(p.name, classifyNetErr(err), "%v", err)
		return nil, &r
	}
	defer hr.Body.Close()
	body, err := io.ReadAll(io.LimitReader(hr.Body, p.common.Limits.MaxBodyBytes+1))
	if err != nil {
		r := failed(p.name, classifyNetErr(err), "reading response: %v", err)
		return nil, &r
	}
	if int64(len(body)) > p.common.Limits.MaxBodyBytes {
		r := failed(p.name, ErrParse, "response over %d bytes", p.common.Limits.MaxBodyBytes)
		r.Raw = body[:min(len(body), MaxRawBytes)]
		return nil, &r
	}
	resp := &response{status: hr.StatusCode, header: hr.Header, body: body}
	p.observeQuota(resp)
	switch {
	case hr.StatusCode == http.StatusTooManyRequests:
		r := failed(p.name, ErrRateLimited, "HTTP 429: %s", snippet(body))
		r.Raw = body
		return resp, &r
	case hr.StatusCode == http.StatusUnauthorized || hr.StatusCode == http.StatusForbidden:
		// Retrying cannot fix credentials: back off for a while.
		p.gate.block(p.common.Now().Add(time.Hour), ErrAuth)
		r := failed(p.name, ErrAuth, "HTTP %d: %s", hr.StatusCode, snippet(body))
		r.Raw = body
		return resp, &r
	}
	return resp, nil
}

// observeQuota feeds the provider's rate-limit headers into the gate.
func (p *httpProvider) observeQuota(r *response) {
	now := p.common.Now()
	if v, err := strconv.Atoi(r.header.Get("X-RateLimit-Remaining")); err == nil && v >= 0 {
		p.gate.observeRemaining(v)
		if v == 0 {
			until := nextUTCMidnight(now)
			if reset, err := strconv.ParseInt(r.header.Get("X-RateLimit-Reset"), 10, 64); err == nil && reset > now.Unix() {
				until = time.Unix(reset, 0)
			}
			p.gate.block(until, ErrQuotaExhausted)
		}
	}
	if r.status == http.StatusTooManyRequests {
		p.gate.throttled()
		until, kind := p.silent429(now)
		if at, said := retryAfter(r.header, now); said {
			until, kind = at, ErrRateLimited
		}
		p.gate.block(until, kind)
	}
}

// retryAfter is when a 429's headers say to try again: Retry-After in
// seconds or as an HTTP-date (RFC 9110 §10.2.3), else X-RateLimit-Reset
// (epoch seconds). said is false when they say nothing usable.
func retryAfter(h http.Header, now time.Time) (until time.Time, said bool) {
	ra := h.Get("Retry-After")
	if secs, err := strconv.Atoi(ra); err == nil && secs >= 0 {
		return now.Add(time.Duration(secs) * time.Second), true
	}
	if at, err := http.ParseTime(ra); err == nil {
		return at, true
	}
	if reset, err := strconv.ParseInt(h.Get("X-RateLimit-Reset"), 10, 64); err == nil && reset > now.Unix() {
		return time.Unix(reset, 0), true
	}
	return time.Time{}, false
}

func classifyNetErr(err error) ErrorKind {
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return ErrTimeout
	}
	return ErrNetwork
}

func snippet(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

func statusError(name string, r *response) Result {
	res := failed(name, ErrHTTPStatus, "HTTP %d: %s", r.status, snippet(r.body))
	res.Raw = r.body
	return res
}

func parseError(name string, body []byte, format string, args ...any) Result {
	res := failed(name, ErrParse, format, args...)
	res.Raw = body
	return res
}
