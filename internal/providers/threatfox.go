package providers

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"time"
)

// ThreatFoxData is what ThreatFox knows of an IP's IOCs.
type ThreatFoxData struct {
	Listed          bool     `json:"listed"`
	ThreatTypes     []string `json:"threat_types,omitempty"`
	IOCTypes        []string `json:"ioc_types,omitempty"`
	MalwareFamilies []string `json:"malware_families,omitempty"`
	MaxConfidence   int      `json:"max_confidence,omitempty"`
}

// ThreatFoxConfig configures ThreatFox. Its API requires an Auth-Key: without
// one the provider is disabled and sends nothing.
type ThreatFoxConfig struct {
	Common
	AuthKey string
}

// DefaultThreatFoxLimits: no numeric quota is published, only fair use.
var DefaultThreatFoxLimits = Limits{MaxConcurrent: 4, RatePerSecond: 1, Burst: 5, Retries: 1}

// ThreatFox is POST {base}/api/v1/ {"query":"search_ioc","search_term":ip}.
type ThreatFox struct {
	*httpProvider
	key string
}

// NewThreatFox builds the provider; BaseURL defaults to the public API.
func NewThreatFox(c ThreatFoxConfig) *ThreatFox {
	if c.BaseURL == "" {
		c.BaseURL = "https://threatfox-api.abuse.ch"
	}
	t := &ThreatFox{httpProvider: newHTTPProvider(NameThreatFox, c.AuthKey, c.Common), key: c.AuthKey}
	t.ask = t.lookup
	return t
}

func (t *ThreatFox) lookup(ctx context.Context, ip netip.Addr) Result {
	if t.key == "" {
		return failed(NameThreatFox, ErrDisabled, "no Auth-Key configured")
	}
	// The request is built once a token is had: in a storm most lookups
	// find none, and need no body.
	resp, fail := t.do(ctx, ip, func(ctx context.Context) (*http.Request, error) {
		payload, _ := json.Marshal(map[string]string{"query": "search_ioc", "search_term": ip.Unmap().String()})
		target := strings.TrimRight(t.common.BaseURL, "/") + "/api/v1/"
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, target, bytes.NewReader(payload))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Accept", "application/json")
		req.Header.Set("Auth-Key", t.key)
		return req, nil
	})
	if fail != nil {
		return *fail
	}
	return decodeThreatFox(resp.status, resp.body, ip, t.common.Now())
}

// decodeThreatFox turns a search_ioc response about ip into a result.
func decodeThreatFox(status int, raw []byte, ip netip.Addr, now time.Time) Result {
	resp := &response{status: status, body: raw}
	if resp.status != http.StatusOK {
		return statusError(NameThreatFox, resp)
	}
	var body struct {
		QueryStatus string          `json:"query_status"`
		Data        json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil {
		return parseError(NameThreatFox, resp.body, "decoding response: %v", err)
	}
	res := Result{Raw: resp.body, FetchedAt: now}
	switch body.QueryStatus {
	case "ok":
	case "no_result": // data is a sentence, not a list
		res.ThreatFox = &ThreatFoxData{}
		return res
	case "unknown_auth_key":
		r := failed(NameThreatFox, ErrAuth, "unknown_auth_key")
		r.Raw = resp.body
		return r
	default:
		r := failed(NameThreatFox, ErrHTTPStatus, "query_status %q", body.QueryStatus)
		r.Raw = resp.body
		return r
	}
	var iocs []struct {
		ID              string   `json:"id"`
		IOC             string   `json:"ioc"`
		ThreatType      string   `json:"threat_type"`
		IOCType         string   `json:"ioc_type"`
		Malware         string   `json:"malware"`
		MalwarePrintabl string   `json:"malware_printable"`
		ConfidenceLevel int      `json:"confidence_level"`
		Tags            []string `json:"tags"`
	}
	if len(body.Data) == 0 || string(body.Data) == "null" {
		return parseError(NameThreatFox, resp.body, "ok response without data")
	}
	if err := json.Unmarshal(body.Data, &iocs); err != nil {
		return parseError(NameThreatFox, resp.body, "decoding IOCs: %v", err)
	}
	data := &ThreatFoxData{}
	for _, ioc := range iocs {
		host := ioc.IOC
		if h, _, err := net.SplitHostPort(ioc.IOC); err == nil {
			host = h
		}
		if a, err := netip.ParseAddr(host); err != nil || a.Unmap() != ip.Unmap() {
			continue // an IOC for another address: not evidence about this one
		}
		data.Listed = true
		data.ThreatTypes = appendSet(data.ThreatTypes, ioc.ThreatType)
		data.IOCTypes = appendSet(data.IOCTypes, ioc.IOCType)
		family := ioc.Malware // DECNET's choice: the Malpedia id (win.qakbot) first
		if family == "" {
			family = ioc.MalwarePrintabl
		}
		data.MalwareFamilies = appendSet(data.MalwareFamilies, family)
		data.MaxConfidence = max(data.MaxConfidence, ioc.ConfidenceLevel)
	}
	res.ThreatFox = data
	return res
}

// appendSet adds v to a sorted set.
func appendSet(set []string, v string) []string {
	if v == "" {
		return set
	}
	i, found := slices.BinarySearch(set, v)
	if found {
		return set
	}
	return slices.Insert(set, i, v)
}
