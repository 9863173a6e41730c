package providers

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"time"
)

// GreyNoiseData is what the Community API says of an IP.
type GreyNoiseData struct {
	Classification string   `json:"classification"`
	Name           string   `json:"name"`
	Tags           []string `json:"tags,omitempty"`
	Noise          bool     `json:"noise"`
	RIOT           bool     `json:"riot"`
	LastSeen       string   `json:"last_seen,omitempty"`
}

// GreyNoiseConfig configures the GreyNoise Community provider. The API key
// is optional: without one the Community API allows about 100 lookups a day.
type GreyNoiseConfig struct {
	Common
	APIKey string
}

// DefaultGreyNoiseLimits follow limits.md: ~100 unauthenticated lookups a
// day, so spend them slowly.
var DefaultGreyNoiseLimits = Limits{MaxConcurrent: 4, RatePerSecond: 1, Burst: 5, DailyBudget: 100, Retries: 1}

// GreyNoise is the GreyNoise Community provider: GET {base}/v3/community/{ip}.
type GreyNoise struct {
	*httpProvider
	key string
}

// NewGreyNoise builds the provider; BaseURL defaults to the public API.
func NewGreyNoise(c GreyNoiseConfig) *GreyNoise {
	if c.BaseURL == "" {
		c.BaseURL = "https://api.greynoise.io"
	}
	g := &GreyNoise{httpProvider: newHTTPProvider(NameGreyNoise, c.APIKey, c.Common), key: c.APIKey}
	g.ask = g.lookup
	// The Community quota is daily and its documented 429 says no more:
	// nothing until the next UTC day. A 429 that says when to retry (a
	// plan's per-second limit, a proxy) blocks for as long as it says.
	g.silent429 = func(now time.Time) (time.Time, ErrorKind) { return nextUTCMidnight(now), ErrQuotaExhausted }
	return g
}

func (g *GreyNoise) lookup(ctx context.Context, ip netip.Addr) Result {
	if !ip.Unmap().Is4() {
		return failed(NameGreyNoise, ErrSkipped, "the Community API answers IPv4 only")
	}
	// The request is built once a token is had: in a storm most lookups
	// find none.
	resp, fail := g.do(ctx, ip, func(ctx context.Context) (*http.Request, error) {
		target := strings.TrimRight(g.common.BaseURL, "/") + "/v3/community/" + url.PathEscape(ip.Unmap().String())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", "application/json")
		if g.key != "" {
			req.Header.Set("key", g.key)
		}
		return req, nil
	})
	if fail != nil {
		return *fail
	}
	return decodeGreyNoise(resp.status, resp.body, g.common.Now())
}

// decodeGreyNoise turns a Community API response into a result: 200 with a
// classification, or 404 "not observed" (an answer: unknown).
func decodeGreyNoise(status int, raw []byte, now time.Time) Result {
	resp := &response{status: status, body: raw}
	var body struct {
		IP             string   `json:"ip"`
		Noise          *bool    `json:"noise"`
		RIOT           *bool    `json:"riot"`
		Classification *string  `json:"classification"`
		Name           *string  `json:"name"`
		Tags           []string `json:"tags"`
		LastSeen       *string  `json:"last_seen"`
		Message        string   `json:"message"`
	}
	switch resp.status {
	case http.StatusOK, http.StatusNotFound:
	default:
		return statusError(NameGreyNoise, resp)
	}
	if err := json.Unmarshal(resp.body, &body); err != nil {
		return parseError(NameGreyNoise, resp.body, "decoding response: %v", err)
	}
	if body.Noise == nil || body.RIOT == nil {
		return parseError(NameGreyNoise, resp.body, "response lacks noise/riot")
	}
	data := &GreyNoiseData{Noise: *body.Noise, RIOT: *body.RIOT, Tags: body.Tags}
	res := Result{Raw: resp.body, GreyNoise: data, FetchedAt: now}
	if resp.status == http.StatusNotFound {
		return res // not observed: an answer (no classification), not an error
	}
	if body.Classification == nil || body.Name == nil {
		return parseError(NameGreyNoise, resp.body, "200 response lacks classification or name")
	}
	data.Classification, data.Name = *body.Classification, *body.Name
	if body.LastSeen != nil {
		if _, err := time.Parse("2006-01-02", *body.LastSeen); err != nil {
			return parseError(NameGreyNoise, resp.body, "last_seen %q is not a date", *body.LastSeen)
		}
		data.LastSeen = *body.LastSeen
	}
	switch data.Classification {
	case "malicious", "benign", "unknown":
	default:
		return parseError(NameGreyNoise, resp.body, "unknown classification %q", data.Classification)
	}
	return res
}
