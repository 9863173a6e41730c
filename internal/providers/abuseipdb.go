package providers

import (
	"context"
	"encoding/json"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// AbuseIPDBData is what the check endpoint says of an IP.
type AbuseIPDBData struct {
	Score          int    `json:"abuse_confidence_score"`
	TotalReports   int    `json:"total_reports"`
	Categories     []int  `json:"categories,omitempty"`
	CountryCode    string `json:"country_code,omitempty"`
	UsageType      string `json:"usage_type,omitempty"`
	ISP            string `json:"isp,omitempty"`
	IsTor          bool   `json:"is_tor"`
	IsWhitelisted  bool   `json:"is_whitelisted"`
	LastReportedAt string `json:"last_reported_at,omitempty"`
}

// AbuseIPDBConfig configures the AbuseIPDB provider. Without an API key it
// is disabled and sends nothing.
type AbuseIPDBConfig struct {
	Common
	APIKey       string
	MaxAgeInDays int  // 1..365, default 30
	Verbose      bool // ask for reports, to get their categories
}

// DefaultAbuseIPDBLimits follow the free tier: 1,000 checks a day.
var DefaultAbuseIPDBLimits = Limits{MaxConcurrent: 8, RatePerSecond: 1, Burst: 10, DailyBudget: 1000, Retries: 1}

// AbuseIPDB is GET {base}/api/v2/check?ipAddress=…&maxAgeInDays=….
type AbuseIPDB struct {
	*httpProvider
	conf AbuseIPDBConfig
}

// NewAbuseIPDB builds the provider; BaseURL defaults to the public API.
func NewAbuseIPDB(c AbuseIPDBConfig) *AbuseIPDB {
	if c.BaseURL == "" {
		c.BaseURL = "https://api.abuseipdb.com"
	}
	if c.MaxAgeInDays < 1 || c.MaxAgeInDays > 365 {
		c.MaxAgeInDays = 30
	}
	a := &AbuseIPDB{httpProvider: newHTTPProvider(NameAbuseIPDB, c.APIKey, c.Common), conf: c}
	a.ask = a.lookup
	return a
}

func (a *AbuseIPDB) lookup(ctx context.Context, ip netip.Addr) Result {
	if a.conf.APIKey == "" {
		return failed(NameAbuseIPDB, ErrDisabled, "no API key configured")
	}
	// The request is built once a token is had: in a storm most lookups
	// find none.
	resp, fail := a.do(ctx, ip, func(ctx context.Context) (*http.Request, error) {
		q := url.Values{"ipAddress": {ip.Unmap().String()}, "maxAgeInDays": {strconv.Itoa(a.conf.MaxAgeInDays)}}
		target := strings.TrimRight(a.common.BaseURL, "/") + "/api/v2/check?" + q.Encode()
		if a.conf.Verbose {
			target += "&verbose"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Key", a.conf.APIKey)
		req.Header.Set("Accept", "application/json") // without it: an HTML page
		return req, nil
	})
	if fail != nil {
		return *fail
	}
	return decodeAbuseIPDB(resp.status, resp.body, a.common.Now())
}

// decodeAbuseIPDB turns a check response into a result.
func decodeAbuseIPDB(status int, raw []byte, now time.Time) Result {
	resp := &response{status: status, body: raw}
	if resp.status != http.StatusOK {
		return statusError(NameAbuseIPDB, resp)
	}
	var body struct {
		Data *struct {
			IsPublic       *bool   `json:"isPublic"`
			Score          *int    `json:"abuseConfidenceScore"`
			IsWhitelisted  *bool   `json:"isWhitelisted"`
			CountryCode    *string `json:"countryCode"`
			UsageType      *string `json:"usageType"`
			ISP            string  `json:"isp"`
			IsTor          bool    `json:"isTor"`
			TotalReports   int     `json:"totalReports"`
			LastReportedAt *string `json:"lastReportedAt"`
			Reports        []struct {
				Categories []int `json:"categories"`
			} `json:"reports"`
		} `json:"data"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil {
		return parseError(NameAbuseIPDB, resp.body, "decoding response: %v", err)
	}
	d := body.Data
	if d == nil || d.Score == nil || d.IsPublic == nil {
		return parseError(NameAbuseIPDB, resp.body, "response lacks data.abuseConfidenceScore or data.isPublic")
	}
	if !*d.IsPublic {
		r := failed(NameAbuseIPDB, ErrSkipped, "AbuseIPDB says the address is not public")
		r.Raw = resp.body
		return r
	}
	data := &AbuseIPDBData{Score: *d.Score, TotalReports: d.TotalReports, ISP: d.ISP, IsTor: d.IsTor}
	if d.IsWhitelisted != nil {
		data.IsWhitelisted = *d.IsWhitelisted
	}
	if d.CountryCode != nil {
		data.CountryCode = *d.CountryCode
	}
	if d.UsageType != nil {
		data.UsageType = *d.UsageType
	}
	if d.LastReportedAt != nil {
		data.LastReportedAt = *d.LastReportedAt
	}
	for _, rep := range d.Reports {
		data.Categories = append(data.Categories, rep.Categories...)
	}
	slices.Sort(data.Categories)
	data.Categories = slices.Compact(data.Categories)

	return Result{Raw: resp.body, AbuseIPDB: data, FetchedAt: now}
}
