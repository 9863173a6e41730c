package intel_processor

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/redpanda-data/benthos/v4/public/service"

	"github.com/decnet/decnet-stream/internal/providers"
)

// Field names, shared by the spec and the parser.
const (
	fIPPath            = "ip_path"
	fIP                = "ip"
	fIPMetadata        = "ip_metadata"
	fLookupTopic       = "lookup_topic"
	fLookupSubjectMeta = "lookup_subject_metadata"
	fRequestTTL        = "request_ttl"
	fTarget            = "target"
	fEmit              = "emit"
	fIncludeRaw        = "include_raw"
	fEnvelopeMetadata  = "envelope_metadata"
	fMaxWait           = "max_wait"
	fCache             = "cache"
	fMaxEntries        = "max_entries"
	fTTL               = "ttl"
	fNegativeTTL       = "negative_ttl"
	fJitter            = "jitter"
	fProviders         = "providers"
	fName              = "name"
	fEnabled           = "enabled"
	fBaseURL           = "base_url"
	fAPIKey            = "api_key"
	fURL               = "url"
	fRefreshInterval   = "refresh_interval"
	fMaxAgeInDays      = "max_age_in_days"
	fVerbose           = "verbose"
	fLimits            = "limits"
	fMaxConcurrent     = "max_concurrent"
	fRatePerSecond     = "rate_per_second"
	fBurst             = "burst"
	fDailyBudget       = "daily_budget"
	fTimeout           = "timeout"
	fMaxBodyBytes      = "max_body_bytes"
	fRetries           = "retries"
	fMaxQueueWait      = "max_queue_wait"
	fNeverQuery        = "never_query"
	fAllowDocRanges    = "allow_documentation_ranges_for_testing"
	fStateFile         = "state_file"
	fPriority          = "priority"
	fBudgetReserve     = "budget_reserve"
	fPriorityThreshold = "priority_threshold"
	fWarmStart         = "warm_start"
	fWarmDSN           = "dsn"
	fWarmTable         = "table"
	fWarmTimeout       = "timeout"
	fLookupOnMiss      = "lookup_on_miss"
	fURLs              = "urls"
	fConfidenceMinimum = "confidence_minimum"
	fListLimit         = "limit"
	fSkipWhen          = "skip_when"
	fFeedDir           = "feed_dir"
	fGeoIP             = "geoip"
	fGeoFiles          = "files"
	fGeoReload         = "reload_interval"
	fSharedBudget      = "shared_budget"
	fVerdicts          = "verdicts"

	emitChanges = "changes"
	emitAll     = "all"
)

var providerNames = []string{providers.NameGreyNoise, providers.NameAbuseIPDB, providers.NameFeodo, providers.NameThreatFox,
	providers.NameAbuseIPDBBlacklist, providers.NameThreatFoxExport, providers.NameSpamhausDROP}

// providerFieldLint flags fields that mean nothing for the named provider.
const providerFieldLint = `# (list fields reach a lint rule as [] when absent: tested by length)
let feeds = [ "feodo", "abuseipdb_blacklist", "threatfox_export", "spamhaus_drop" ]
root = match {
  this.type() != "object" => deleted(),
  !["feodo", "threatfox_export"].contains(this.name) && this.exists("url") => [ "providers: url is for feodo and threatfox_export; use base_url (abuseipdb_blacklist) or urls (spamhaus_drop)" ],
  this.name != "spamhaus_drop" && this.urls.or([]).length() > 0 => [ "providers: urls is for spamhaus_drop only" ],
  !$feeds.contains(this.name) && this.exists("refresh_interval") => [ "providers: refresh_interval is for the feeds only (%s)".format($feeds.join(", ")) ],
  this.name == "spamhaus_drop" && this.refresh_interval.or("12h").re_match("^([0-9.]+(ns|us|µs|ms|s))+$|^[0-5]?[0-9](\\.[0-9]+)?m([0-9.]+(ns|us|µs|ms|s))*$") => [ "providers: spamhaus_drop refresh_interval must be at least 1h: Spamhaus blocks hosts that download more often" ],
  this.name != "abuseipdb" && (this.exists("max_age_in_days") || this.exists("verbose")) => [ "providers: max_age_in_days and verbose are for abuseipdb only" ],
  this.name != "abuseipdb_blacklist" && (this.exists("confidence_minimum") || this.exists("limit")) => [ "providers: confidence_minimum and limit are for abuseipdb_blacklist only" ],
  $feeds.contains(this.name) && this.skip_when.or([]).length() > 0 => [ "providers: skip_when is for the per-IP providers (greynoise, abuseipdb, threatfox); %s is a feed".format(this.name) ],
  this.skip_when.or([]).any(n -> !$feeds.contains(n)) => [ "providers: skip_when names feeds only (%s), got %v".format($feeds.join(", "), this.skip_when) ],
  _ => deleted(),
}`

func limitsFields() []*service.ConfigField {
	return []*service.ConfigField{
		service.NewIntField(fMaxConcurrent).Description("Requests in flight at once.").Optional(),
		service.NewFloatField(fRatePerSecond).Description("Token-bucket rate of requests per second.").Optional(),
		service.NewIntField(fBurst).Description("Token-bucket burst: requests that may leave back to back. Against a provider that enforces a per-second rate, set it below the provider's own burst: requests sent evenly reach it bunched by scheduling and the network, and a 429 holds the provider back for its Retry-After. After a 429, sends leave at most half the burst back to back until a minute passes without one.").Optional(),
		service.NewIntField(fDailyBudget).Description("Requests per UTC day; 0 for no cap. Persisted in `state_file`.").Optional(),
		service.NewDurationField(fTimeout).Description("Per-request timeout.").Optional(),
		service.NewIntField(fMaxBodyBytes).Description("Largest response accepted.").Optional(),
		service.NewIntField(fRetries).Description("Extra attempts after a network error or 5xx (never after 4xx or 429).").Optional(),
		service.NewDurationField(fMaxQueueWait).Description("The longest a lookup waits for a rate-limit token before it is recorded `rate_limited` (and asked again after `negative_ttl`); by default up to `max_wait`. Shorter lets repeat sightings in the same partitions through sooner during a storm of new attackers, at the cost of leaving some of the allowed rate unused.").Optional().Advanced(),
	}
}

func spec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Integration").
		Summary("Enriches DECNET attacker events with threat intel on their IP: deduplicated, cached, coalesced, within the providers' free tiers, and never stalling the stream.").
		Description(descriptionText).
		Fields(
			service.NewStringField(fIPPath).
				Description("A dot path to the attacker IP in the event, read without decoding the event.").
				Default("payload.attacker_ip"),
			service.NewBloblangField(fIP).
				Description("A Bloblang mapping returning the IP, for shapes a path cannot reach. Costs a mapping per event; overrides `ip_path`.").
				Optional().Advanced(),
			service.NewStringField(fIPMetadata).
				Description("Read the IP from this metadata key instead of the event: `decnet_key` after a `topic_router` route with `key_format: ip`, which has validated and canonicalised it. Costs no look into the event at all.").
				Default("").Example("decnet_key"),
			service.NewStringField(fLookupTopic).
				Description("Split the work in two (see \"Two stages\" above): a sighting of an IP without a current row is let through with `intel_lookup: request` metadata, for the output to write to this topic keyed by IP, and events read back from it (`kafka_topic` metadata) are the lookup requests, looked up and emitted. Empty: a missed sighting is looked up inline, in its own batch.").
				Default("").Example("attacker.intel.lookup"),
			service.NewStringField(fLookupSubjectMeta).
				Description("With `lookup_topic`: the metadata key a lookup request names its sighting's subject in — the key's own value when the sighting came with one (a `decnet_subject` header), else the topic it was read from (`kafka_topic`) — so the lookup stage validates it again as what it was. Set, the output writing the requests needs no mapping for it (a mapping costs each request a metadata copy and an execution).").
				Default("").Example("decnet_subject").Advanced(),
			service.NewDurationField(fRequestTTL).
				Description("With `lookup_topic`: how long a sent lookup request counts as on its way, so that later sightings of the IP send none of their own.").
				Default("10m").Advanced(),
			service.NewStringField(fTarget).
				Description("Where in the event to write the enrichment.").
				Default("intel"),
			service.NewStringAnnotatedEnumField(fEmit, map[string]string{
				emitChanges: "Only events whose IP got a new or updated enrichment leave the processor (one per enrichment, as DECNET's worker publishes); repeat sightings are dropped after their cache hit.",
				emitAll:     "Every event leaves, with the enrichment written in (inline enrichment for SIEM streams).",
			}).Default(emitChanges),
			service.NewBoolField(fIncludeRaw).
				Description("Also write the providers' raw responses and query times (what the attacker_intel table stores). Cached rows then keep their raw responses, which costs memory.").
				Default(false).Advanced(),
			service.NewStringField(fEnvelopeMetadata).
				Description("A metadata key that each emitted row also gets, holding its `attacker.intel.enriched` v1 envelope ready to publish (the payload fields DECNET's own intel worker publishes, lists as `[]`, `providers`: those whose answer the row holds; raw answers and bookkeeping left out). Its id is the row's identity (32 hex characters of sha256 of IP and row version), so every copy of one enrichment has the same id, and its `ts` the row's `cached_at`. Publish it with `mapping: root = @<key>`: bytes copied, where a Bloblang mapping building the envelope decodes the whole event. Empty: not written.").
				Default("").Advanced().
				Example("intel_enriched_event"),
			service.NewDurationField(fMaxWait).
				Description("The longest a lookup waits for a provider's rate-limit token or concurrency slot: past it the provider is `rate_limited` in the row, asked again after `negative_ttl`. With `emit: all`, also the longest an event waits for its lookup (providers that have not answered are `deferred` in its annotation; their answers fill the cache).").
				Default("2s"),
			service.NewObjectField(fCache,
				service.NewIntField(fMaxEntries).Description("Rows kept in memory (LRU).").Default(100000).
					LintRule(`root = if this < 1 { [ "cache.max_entries must be at least 1" ] }`),
				service.NewDurationField(fTTL).Description("How long a complete row lives, from when it was fetched.").Default("24h"),
				service.NewDurationField(fNegativeTTL).Description("How long a row with a failed, deferred or out-of-budget provider lives before those providers are asked again.").Default("10m"),
				service.NewFloatField(fJitter).Description("Up to this share of the TTL is added to each row's life at random, so a burst of lookups does not expire at once. Only added: a row always lives its full TTL, so a daily quota is never spent on an answer younger than the TTL.").Default(0.05).
					LintRule(`root = if this < 0 || this >= 1 { [ "cache.jitter must be in [0, 1)" ] }`),
			).Description("The in-process cache of each IP's row."),
			service.NewObjectListField(fProviders,
				service.NewStringEnumField(fName, providerNames...).Description("Which provider."),
				service.NewBoolField(fEnabled).Default(true),
				service.NewStringField(fBaseURL).Description("The API's base URL (for tests or proxies).").Optional().Advanced(),
				service.NewStringField(fAPIKey).Description("The API key (GreyNoise `key`, AbuseIPDB `Key`, abuse.ch `Auth-Key`). Set it from the environment. AbuseIPDB and ThreatFox are disabled without one.").Default("").Secret(),
				service.NewStringField(fURL).Description("Feodo and threatfox_export: the list's URL; `file://` for air-gapped sites.").Optional(),
				service.NewStringListField(fURLs).Description("spamhaus_drop: the list's parts (default drop_v4.json and drop_v6.json); `file://` for air-gapped sites.").Optional(),
				service.NewDurationField(fRefreshInterval).Description("Feeds only: how often to download the list again (conditional GET). Defaults: feodo and threatfox_export 1h, abuseipdb_blacklist 6h (the free tier allows 5 downloads a day), spamhaus_drop 12h (never under 1h: Spamhaus blocks hosts that download more often).").Optional(),
				service.NewIntField(fConfidenceMinimum).Description("abuseipdb_blacklist: the lowest abuse confidence score listed, 25–100 (the free tier gets 100 whatever is asked).").Optional().
					LintRule(`root = if this < 25 || this > 100 { [ "confidence_minimum must be in [25, 100]" ] }`),
				service.NewIntField(fListLimit).Description("abuseipdb_blacklist: the most IPs downloaded (10,000 on the free tier).").Optional(),
				service.NewStringListField(fSkipWhen).Description("Per-IP providers: the feeds whose listing of an IP makes this provider's call unnecessary. The feeds answer first (from memory); if one named here lists the IP, this provider is not asked and its status is `covered`, so its per-IP budget goes to the attackers no list has.").Optional().
					Example([]string{"abuseipdb_blacklist", "threatfox_export", "spamhaus_drop", "feodo"}),
				service.NewIntField(fMaxAgeInDays).Description("AbuseIPDB only: report age considered, 1–365.").Optional(),
				service.NewBoolField(fVerbose).Description("AbuseIPDB only: ask for reports, to get their categories.").Optional(),
				service.NewObjectField(fLimits, limitsFields()...).Description("Overrides of the provider's default free-tier limits.").Optional(),
			).
				Description("The providers to ask, each a typed block.").
				LintRule(providerFieldLint).
				Example([]any{
					map[string]any{"name": "greynoise", "api_key": "${DECNET_GREYNOISE_API_KEY:}"},
					map[string]any{"name": "abuseipdb", "api_key": "${DECNET_ABUSEIPDB_API_KEY:}"},
					map[string]any{"name": "feodo"},
					map[string]any{"name": "threatfox", "api_key": "${DECNET_THREATFOX_API_KEY:}"},
				}),
			service.NewStringField(fFeedDir).
				Description("A directory where the feeds (feodo and the bulk lists) keep their last good download: a restart, or an outage of the provider, serves it (with its age in the row's `*_queried_at` and in the metrics) instead of nothing. Empty keeps them in memory only.").
				Default("").Example("./var/intel/feeds"),
			geoIPField(),
			service.NewStringListField(fNeverQuery).
				Description("Your own networks (CIDRs or addresses): never sent to any provider. Private, loopback, link-local, CGNAT, multicast, documentation, benchmarking and reserved ranges never are either.").
				Default([]string{}),
			service.NewBoolField(fAllowDocRanges).
				Description("Let the documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) through to providers, because recorded test fixtures use them. For tests and fixture-fed demos only.").
				Default(false).Advanced(),
			service.NewStringField(fStateFile).
				Description("A file keeping each provider's daily budget across restarts; empty keeps it in memory.").
				Default("").Example("./var/intel/budget.json"),
			service.NewObjectField(fSharedBudget,
				service.NewStringField(fWarmDSN).Description("The ClickHouse native DSN of the ledger.").Example("${CLICKHOUSE_DSN:clickhouse://127.0.0.1:9000/default}"),
				service.NewStringField(fWarmTable).Description("The ledger table (created when missing).").Default("intel_budget").
					LintRule(`root = if !this.re_match("^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)?$") { [ "shared_budget.table: %q is not a plain [database.]identifier".format(this) ] }`),
			).
				Description("Share each provider's daily budget with the other replicas of this consumer group through a small ledger table in ClickHouse: a budget belongs to an API key, and replicas counting alone would spend it once each. Before each budgeted call a replica reports its count and takes its share of what the group has left (split among the replicas active in the last minute). If the ledger cannot be reached, spending stays within the last share known. Needs `state_file` (it names the replica).").
				Optional(),
			verdictsField(),
			service.NewBloblangField(fPriority).
				Description("A mapping giving an event's priority (e.g. from `attacker.scored` payloads). With `budget_reserve`, low-priority lookups leave a provider's last calls to the attackers that matter. It runs once per lookup that starts (never for a repeat sighting), and only when some provider has a `daily_budget` whose reserve it could decide.").
				Example(`root = this.payload.event_count.or(0) + if this.payload.is_traversal.or(false) { 100 } else { 0 }`).
				Optional().Advanced(),
			service.NewFloatField(fBudgetReserve).
				Description("The share of a daily budget kept for lookups with a priority of at least `priority_threshold`; lower-priority ones are `quota_reserved`.").
				Default(0.0).Advanced().
				LintRule(`root = if this < 0 || this > 1 { [ "budget_reserve must be in [0, 1]" ] }`),
			service.NewFloatField(fPriorityThreshold).Default(0.0).Advanced(),
			service.NewObjectField(fWarmStart,
				service.NewStringField(fWarmDSN).Description("The ClickHouse native DSN.").Example("${CLICKHOUSE_DSN:clickhouse://127.0.0.1:9000/default}"),
				service.NewStringField(fWarmTable).Description("The attacker_intel table.").Default("attacker_intel").
					LintRule(`root = if !this.re_match("^[A-Za-z_][A-Za-z0-9_]*(\\.[A-Za-z_][A-Za-z0-9_]*)?$") { [ "warm_start.table: %q is not a plain [database.]identifier".format(this) ] }`),
				service.NewDurationField(fWarmTimeout).Description("How long loading may take before enrichment starts cold.").Default("30s"),
				service.NewBoolField(fLookupOnMiss).Description("Also ask ClickHouse on a cache miss, before the providers: a second-level cache shared by every replica. Costs a query per miss (within `max_wait`).").Default(false),
			).
				Description("Load unexpired rows from ClickHouse at start (newest first, up to `cache.max_entries`), so a restart or a new replica does not ask the providers again for IPs already answered. Loaded rows count as published: their first sighting emits nothing. If ClickHouse cannot be read, enrichment starts cold and says so.").
				Optional(),
		).
		LintRule(`root = if this.providers.or([]).length() == 0 { [ "providers must list at least one provider" ] }`).
		Example("Enrich attacker events", "One enriched event per enrichment, keys from the environment.", `
pipeline:
  processors:
    - intel_enrich:
        providers:
          - name: greynoise
            api_key: ${DECNET_GREYNOISE_API_KEY:}
          - name: abuseipdb
            api_key: ${DECNET_ABUSEIPDB_API_KEY:}
          - name: feodo
          - name: threatfox
            api_key: ${DECNET_THREATFOX_API_KEY:}
        never_query: [ "198.18.0.0/15" ]
        state_file: ./var/intel/budget.json
`)
}

// geoIPField is the offline ASN and country lookup.
func geoIPField() *service.ConfigField {
	return service.NewObjectField(fGeoIP,
		service.NewStringListField(fGeoFiles).
			Description("MMDB files, first answer per field wins: MaxMind GeoLite2 ASN / Country / City, DB-IP lite (ASN, country) or IPinfo lite. You supply them (their licences require it); none ships with decnet-stream.").
			Example([]string{"/var/lib/GeoIP/GeoLite2-ASN.mmdb", "/var/lib/GeoIP/GeoLite2-Country.mmdb"}).
			Default([]string{}),
		service.NewDurationField(fGeoReload).
			Description("How often to check the files for a new version (size or modification time) and read it: replace a file by renaming the new one over it.").
			Default("1m"),
	).
		Description("Offline ASN and country for every attacker, free of provider quota: `asn`, `as_org` and `country` in the row and the enriched event. Off while no file is named (empty names, e.g. from unset environment variables, are dropped); a file that cannot be read stops the start, a file that later cannot be read keeps its previous copy in service.").
		Optional()
}

var verdictNames = []string{"malicious", "suspicious", "benign", "unknown", "none"}

func verdictField(name, def, desc string) *service.ConfigField {
	return service.NewStringEnumField(name, verdictNames...).Description(desc).Default(def)
}

// verdictsField is the verdict policy: per provider, what its answers mean.
// Its defaults are DECNET's own rules.
func verdictsField() *service.ConfigField {
	return service.NewObjectField(fVerdicts,
		service.NewObjectField("greynoise",
			verdictField("malicious", "malicious", "Classification malicious."),
			verdictField("benign", "benign", "Classification benign."),
			verdictField("unknown", "unknown", "Classification unknown: seen scanning, intent unknown."),
			verdictField("not_seen", "unknown", "A 404: not observed scanning the internet."),
			verdictField("riot", "none", "A RIOT IP (a common business service), whatever its classification; none: the classification decides, as in DECNET."),
		).Description("GreyNoise Community's classification."),
		service.NewObjectField("abuseipdb",
			service.NewIntField("malicious_at").Description("Scores at or above: malicious.").Default(75),
			service.NewIntField("suspicious_at").Description("Scores at or above: suspicious.").Default(25),
			verdictField("below", "benign", "Scores below `suspicious_at`."),
			verdictField("no_reports", "benign", "A score of 0 with no reports at all."),
		).Description("AbuseIPDB's abuse confidence score.").
			LintRule(`root = if this.suspicious_at.or(25) < 0 || this.malicious_at.or(75) > 100 || this.suspicious_at.or(25) > this.malicious_at.or(75) { [ "verdicts.abuseipdb: need 0 <= suspicious_at <= malicious_at <= 100" ] }`),
		service.NewObjectField("feodo",
			verdictField("online", "malicious", "Listed with an online entry: an active C2."),
			verdictField("offline", "malicious", "Listed with offline entries only: a former C2."),
		).Description("Feodo Tracker's blocklist (not listed: no opinion)."),
		service.NewObjectField("threatfox",
			verdictField("listed", "malicious", "Any IOC for the IP (the search and the export alike)."),
		).Description("ThreatFox's IOCs (none: no opinion). AbuseIPDB's blacklist scores follow `abuseipdb`'s thresholds."),
		service.NewObjectField("spamhaus_drop",
			verdictField("listed", "malicious", "In a DROP network: hijacked, or run by criminals."),
		).Description("Spamhaus DROP (not listed: no opinion). DECNET has no Spamhaus; this is the stage's default."),
	).Description("What each provider's answer means. The defaults are DECNET's own intel worker's rules, so the stage and DECNET agree on every IP; choose stricter ones here (e.g. `feodo.offline: suspicious`, `abuseipdb.no_reports: unknown`). `none` means no opinion. The aggregate is the strongest verdict (malicious > suspicious > benign > unknown), null when no provider has an opinion.").
		Advanced()
}

// parsePolicy reads the verdicts block.
func parsePolicy(conf *service.ParsedConfig) (providers.Policy, error) {
	p := providers.DECNETPolicy()
	v := conf.Namespace(fVerdicts)
	read := func(dst *providers.Verdict, path ...string) error {
		s, err := v.FieldString(path...)
		if err != nil {
			return err
		}
		*dst, err = providers.ParseVerdict(s)
		return err
	}
	for _, f := range []struct {
		dst  *providers.Verdict
		path []string
	}{
		{&p.GreyNoise.Malicious, []string{"greynoise", "malicious"}}, {&p.GreyNoise.Benign, []string{"greynoise", "benign"}},
		{&p.GreyNoise.Unknown, []string{"greynoise", "unknown"}}, {&p.GreyNoise.NotSeen, []string{"greynoise", "not_seen"}},
		{&p.GreyNoise.RIOT, []string{"greynoise", "riot"}},
		{&p.AbuseIPDB.Below, []string{"abuseipdb", "below"}}, {&p.AbuseIPDB.NoReports, []string{"abuseipdb", "no_reports"}},
		{&p.Feodo.Online, []string{"feodo", "online"}}, {&p.Feodo.Offline, []string{"feodo", "offline"}},
		{&p.ThreatFox.Listed, []string{"threatfox", "listed"}},
		{&p.SpamhausDROP.Listed, []string{"spamhaus_drop", "listed"}},
	} {
		if err := read(f.dst, f.path...); err != nil {
			return p, fmt.Errorf("%s.%s: %w", fVerdicts, strings.Join(f.path, "."), err)
		}
	}
	var err error
	if p.AbuseIPDB.MaliciousAt, err = v.FieldInt("abuseipdb", "malicious_at"); err != nil {
		return p, err
	}
	if p.AbuseIPDB.SuspiciousAt, err = v.FieldInt("abuseipdb", "suspicious_at"); err != nil {
		return p, err
	}
	if err := p.Check(); err != nil {
		return p, fmt.Errorf("%s: %w", fVerdicts, err)
	}
	return p, nil
}

// providerConf is one parsed provider block.
type providerConf struct {
	name, baseURL, apiKey, url string
	urls, skipWhen             []string
	refresh                    time.Duration
	maxAge, confMin, listLimit int
	verbose                    bool
	limits                     *providers.Limits
}

func parseProviders(conf *service.ParsedConfig) ([]providerConf, error) {
	list, err := conf.FieldObjectList(fProviders)
	if err != nil {
		return nil, err
	}
	var out []providerConf
	seen := map[string]bool{}
	for i, pc := range list {
		var p providerConf
		if p.name, err = pc.FieldString(fName); err != nil {
			return nil, err
		}
		if seen[p.name] {
			return nil, fmt.Errorf("%s[%d]: %s listed twice", fProviders, i, p.name)
		}
		seen[p.name] = true
		if on, err := pc.FieldBool(fEnabled); err != nil || !on {
			continue
		}
		if pc.Contains(fBaseURL) {
			p.baseURL, _ = pc.FieldString(fBaseURL)
		}
		p.apiKey, _ = pc.FieldString(fAPIKey)
		if pc.Contains(fURL) {
			p.url, _ = pc.FieldString(fURL)
		}
		if pc.Contains(fRefreshInterval) {
			p.refresh, _ = pc.FieldDuration(fRefreshInterval)
			if p.name == providers.NameSpamhausDROP && p.refresh < providers.MinSpamhausDROPRefresh {
				return nil, fmt.Errorf("%s[%d].%s: spamhaus_drop must be at least %s (Spamhaus blocks hosts that download more often), got %s",
					fProviders, i, fRefreshInterval, providers.MinSpamhausDROPRefresh, p.refresh)
			}
		}
		if pc.Contains(fMaxAgeInDays) {
			p.maxAge, _ = pc.FieldInt(fMaxAgeInDays)
		}
		if pc.Contains(fVerbose) {
			p.verbose, _ = pc.FieldBool(fVerbose)
		}
		if pc.Contains(fURLs) {
			p.urls, _ = pc.FieldStringList(fURLs)
		}
		p.confMin, p.listLimit = 100, 10000
		if pc.Contains(fConfidenceMinimum) {
			p.confMin, _ = pc.FieldInt(fConfidenceMinimum)
		}
		if pc.Contains(fListLimit) {
			p.listLimit, _ = pc.FieldInt(fListLimit)
		}
		if pc.Contains(fSkipWhen) {
			p.skipWhen, _ = pc.FieldStringList(fSkipWhen)
		}
		if pc.Contains(fLimits) {
			l, err := parseLimits(pc.Namespace(fLimits), defaultLimits(p.name))
			if err != nil {
				return nil, fmt.Errorf("%s[%d].%s: %w", fProviders, i, fLimits, err)
			}
			p.limits = &l
		}
		out = append(out, p)
	}
	// skip_when must name feeds that are configured and enabled, or it
	// would silently never skip.
	enabled := map[string]bool{}
	for _, p := range out {
		enabled[p.name] = true
	}
	for i, p := range out {
		for _, f := range p.skipWhen {
			if !isFeed(f) {
				return nil, fmt.Errorf("%s[%d].%s: %q is not a feed", fProviders, i, fSkipWhen, f)
			}
			if !enabled[f] {
				return nil, fmt.Errorf("%s[%d].%s: %q is not an enabled provider of this processor", fProviders, i, fSkipWhen, f)
			}
		}
	}
	return out, nil
}

func isFeed(name string) bool { return name == providers.NameFeodo || providers.ListIndex(name) >= 0 }

// skipWhen is the engine's skip_when map of the parsed blocks.
func skipWhen(confs []providerConf) map[string][]string {
	out := map[string][]string{}
	for _, p := range confs {
		if len(p.skipWhen) > 0 {
			out[p.name] = p.skipWhen
		}
	}
	return out
}

func defaultLimits(name string) providers.Limits {
	switch name {
	case providers.NameGreyNoise:
		return providers.DefaultGreyNoiseLimits
	case providers.NameAbuseIPDB:
		return providers.DefaultAbuseIPDBLimits
	case providers.NameThreatFox:
		return providers.DefaultThreatFoxLimits
	}
	return providers.Limits{}
}

func parseLimits(c *service.ParsedConfig, l providers.Limits) (providers.Limits, error) {
	ints := map[string]*int{fMaxConcurrent: &l.MaxConcurrent, fBurst: &l.Burst, fDailyBudget: &l.DailyBudget, fRetries: &l.Retries}
	for f, dst := range ints {
		if c.Contains(f) {
			v, err := c.FieldInt(f)
			if err != nil {
				return l, err
			}
			*dst = v
		}
	}
	if c.Contains(fRatePerSecond) {
		v, err := c.FieldFloat(fRatePerSecond)
		if err != nil {
			return l, err
		}
		l.RatePerSecond = v
	}
	if c.Contains(fTimeout) {
		v, err := c.FieldDuration(fTimeout)
		if err != nil {
			return l, err
		}
		l.Timeout = v
	}
	if c.Contains(fMaxQueueWait) {
		v, err := c.FieldDuration(fMaxQueueWait)
		if err != nil {
			return l, err
		}
		l.MaxQueueWait = v
	}
	if c.Contains(fMaxBodyBytes) {
		v, err := c.FieldInt(fMaxBodyBytes)
		if err != nil {
			return l, err
		}
		l.MaxBodyBytes = int64(v)
	}
	return l, nil
}

// buildProviders turns parsed blocks into providers.
func buildProviders(confs []providerConf, guard *providers.Guard, stateFile, feedDir string, shared *providers.Shared, policy *providers.Policy) ([]providers.Provider, []providers.Feed, *providers.BudgetStore, error) {
	var store *providers.BudgetStore
	if stateFile != "" {
		var err error
		if store, err = providers.OpenBudgetStore(filepath.Clean(stateFile)); err != nil {
			return nil, nil, nil, fmt.Errorf("%s: %w", fStateFile, err)
		}
	}
	var out []providers.Provider
	var feeds []providers.Feed
	for _, p := range confs {
		list := providers.BulkListConfig{Key: p.apiKey, RefreshInterval: p.refresh, CacheDir: feedDir, Guard: guard, Policy: policy}
		if p.url != "" {
			list.URLs = []string{p.url}
		}
		if len(p.urls) > 0 {
			list.URLs = p.urls
		}
		limits := defaultLimits(p.name)
		if p.limits != nil {
			limits = *p.limits
		}
		common := providers.Common{BaseURL: p.baseURL, Limits: limits, Guard: guard, Budget: store, Shared: shared, Policy: policy}
		switch p.name {
		case providers.NameGreyNoise:
			out = append(out, providers.NewGreyNoise(providers.GreyNoiseConfig{Common: common, APIKey: p.apiKey}))
		case providers.NameAbuseIPDB:
			out = append(out, providers.NewAbuseIPDB(providers.AbuseIPDBConfig{Common: common, APIKey: p.apiKey, MaxAgeInDays: p.maxAge, Verbose: p.verbose}))
		case providers.NameThreatFox:
			out = append(out, providers.NewThreatFox(providers.ThreatFoxConfig{Common: common, AuthKey: p.apiKey}))
		case providers.NameFeodo:
			f := providers.NewFeodo(providers.FeodoConfig{URL: p.url, RefreshInterval: p.refresh, AuthKey: p.apiKey, Guard: guard, Policy: policy, CacheDir: feedDir})
			feeds = append(feeds, f)
			out = append(out, f)
		case providers.NameAbuseIPDBBlacklist:
			list.URLs, list.MinScore = []string{providers.AbuseIPDBBlacklistURL(p.baseURL, p.confMin, p.listLimit)}, p.confMin
			f := providers.NewAbuseIPDBBlacklist(list)
			feeds = append(feeds, f)
			out = append(out, f)
		case providers.NameThreatFoxExport:
			f := providers.NewThreatFoxExport(list)
			feeds = append(feeds, f)
			out = append(out, f)
		case providers.NameSpamhausDROP:
			f := providers.NewSpamhausDROP(list)
			feeds = append(feeds, f)
			out = append(out, f)
		}
	}
	return out, feeds, store, nil
}
