package providers

import "fmt"

// Policy says what each provider's answer means, as a verdict. The default
// is DECNET's own intel worker's rules, so that the stage and DECNET agree
// on every IP; operators may choose stricter ones (in intel_enrich's
// verdicts block).
type Policy struct {
	GreyNoise GreyNoisePolicy
	AbuseIPDB AbuseIPDBPolicy
	Feodo     FeodoPolicy
	ThreatFox ThreatFoxPolicy
	// AbuseIPDB's blacklist scores use AbuseIPDB's thresholds; ThreatFox's
	// export, ThreatFox's listed verdict.
	SpamhausDROP SpamhausDROPPolicy
}

// SpamhausDROPPolicy is the verdict of an IP in a DROP network (not
// listed: no opinion).
type SpamhausDROPPolicy struct{ Listed Verdict }

// GreyNoisePolicy maps the Community API's classification to a verdict.
type GreyNoisePolicy struct {
	Malicious, Benign, Unknown Verdict
	NotSeen                    Verdict // a 404: not observed scanning
	// RIOT, when set, is the verdict of a RIOT IP (a common business
	// service) whatever its classification. DECNET does not use RIOT.
	RIOT Verdict
}

// AbuseIPDBPolicy maps the abuse confidence score to a verdict.
type AbuseIPDBPolicy struct {
	MaliciousAt, SuspiciousAt int     // score thresholds (at or above)
	Below                     Verdict // a score under SuspiciousAt
	// NoReports is the verdict of an IP with no reports at all (score 0).
	NoReports Verdict
}

// FeodoPolicy maps a blocklist entry to a verdict (not listed: no opinion).
type FeodoPolicy struct{ Online, Offline Verdict }

// ThreatFoxPolicy maps IOCs found for the IP to a verdict (none: no
// opinion).
type ThreatFoxPolicy struct{ Listed Verdict }

// DECNETPolicy is DECNET's intel worker's rules: GreyNoise's
// classification passes through (404 is unknown; RIOT is not used);
// AbuseIPDB ≥75 malicious, ≥25 suspicious, anything else benign, reports
// or not; Feodo listed is malicious whatever its status; ThreatFox any IOC
// is malicious.
func DECNETPolicy() Policy {
	return Policy{
		GreyNoise: GreyNoisePolicy{Malicious: VerdictMalicious, Benign: VerdictBenign, Unknown: VerdictUnknown, NotSeen: VerdictUnknown},
		AbuseIPDB: AbuseIPDBPolicy{MaliciousAt: 75, SuspiciousAt: 25, Below: VerdictBenign, NoReports: VerdictBenign},
		Feodo:     FeodoPolicy{Online: VerdictMalicious, Offline: VerdictMalicious},
		ThreatFox: ThreatFoxPolicy{Listed: VerdictMalicious},
		// DECNET has no Spamhaus: DROP networks are hijacked or run by
		// criminals ("drop all traffic"), so malicious.
		SpamhausDROP: SpamhausDROPPolicy{Listed: VerdictMalicious},
	}
}

// listed is the verdict of an abuse confidence score.
func (a AbuseIPDBPolicy) listed(score int) Verdict {
	switch {
	case score >= a.MaliciousAt:
		return VerdictMalicious
	case score >= a.SuspiciousAt:
		return VerdictSuspicious
	}
	return a.Below
}

// ParseVerdict reads a verdict as configured: one of the four, or "none"
// (or empty) for no opinion.
func ParseVerdict(s string) (Verdict, error) {
	switch v := Verdict(s); v {
	case VerdictMalicious, VerdictSuspicious, VerdictBenign, VerdictUnknown:
		return v, nil
	case "none", "":
		return VerdictNone, nil
	}
	return VerdictNone, fmt.Errorf("%q is not a verdict (malicious, suspicious, benign, unknown or none)", s)
}

// Check refuses thresholds that cannot be meant.
func (p Policy) Check() error {
	a := p.AbuseIPDB
	if a.SuspiciousAt < 0 || a.MaliciousAt > 100 || a.SuspiciousAt > a.MaliciousAt {
		return fmt.Errorf("abuseipdb thresholds must satisfy 0 <= suspicious_at (%d) <= malicious_at (%d) <= 100", a.SuspiciousAt, a.MaliciousAt)
	}
	return nil
}

// Verdict is what res means under p: no opinion for a failure or a
// provider this policy does not know.
func (p Policy) Verdict(res Result) Verdict {
	if !res.OK() {
		return VerdictNone
	}
	switch {
	case res.GreyNoise != nil:
		d, g := res.GreyNoise, p.GreyNoise
		switch {
		case d.RIOT && g.RIOT != VerdictNone:
			return g.RIOT
		case d.Classification == "malicious":
			return g.Malicious
		case d.Classification == "benign":
			return g.Benign
		case d.Classification == "unknown":
			return g.Unknown
		case d.Classification == "":
			return g.NotSeen
		}
	case res.AbuseIPDB != nil:
		d, a := res.AbuseIPDB, p.AbuseIPDB
		if d.Score < a.SuspiciousAt && d.TotalReports == 0 {
			return a.NoReports
		}
		return a.listed(d.Score)
	case res.Feodo != nil:
		switch {
		case !res.Feodo.Listed:
		case res.Feodo.Status == "online":
			return p.Feodo.Online
		default:
			return p.Feodo.Offline
		}
	case res.ThreatFox != nil:
		if res.ThreatFox.Listed {
			return p.ThreatFox.Listed
		}
	case res.List != nil && res.List.Listed:
		switch res.Provider {
		case NameAbuseIPDBBlacklist:
			if res.List.Score == nil {
				return p.AbuseIPDB.listed(p.AbuseIPDB.MaliciousAt) // plaintext: listed at the download's floor
			}
			return p.AbuseIPDB.listed(*res.List.Score)
		case NameThreatFoxExport:
			return p.ThreatFox.Listed
		case NameSpamhausDROP:
			return p.SpamhausDROP.Listed
		}
	}
	return VerdictNone
}
