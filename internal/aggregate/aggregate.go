// Package aggregate combines provider results into DECNET's attacker_intel
// row for one IP: per-provider columns, where every answer came from, and
// the aggregate verdict (the strongest provider opinion). It is plain Go.
package aggregate

import (
	"encoding/json"
	"strconv"
	"time"

	"github.com/decnet/decnet-stream/internal/providers"
)

// SchemaVersion is the version of the row's shape; it is stored with every
// row so readers can tell rows of different builds apart.
const SchemaVersion = 2

// VerdictNone is the aggregate when no provider has an opinion. It is not
// benign. Rows and events write it as null, as DECNET does.
const VerdictNone = "none"

// Aggregate is a row's aggregate verdict: the strongest of the providers'
// opinions, VerdictNone (written null) when none has one.
type Aggregate string

// MarshalJSON writes VerdictNone as null.
func (v Aggregate) MarshalJSON() ([]byte, error) {
	if v == VerdictNone || v == "" {
		return []byte("null"), nil
	}
	return json.Marshal(string(v))
}

// UnmarshalJSON reads null as VerdictNone.
func (v *Aggregate) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*v = VerdictNone
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	*v = Aggregate(s)
	return nil
}

// Provider statuses besides "ok" and the providers' error kinds.
const (
	StatusOK       = "ok"
	StatusDeferred = "deferred" // not answered within max_wait; still running (emit: all)
	StatusReserved = "quota_reserved"
	// StatusStale is an earlier answer kept because asking again failed (or
	// was held back): a failure never overwrites an answer. The provider's
	// columns and its queried_at say what it said and when.
	StatusStale = "stale"
)

// Strongest returns the strongest verdict (malicious > suspicious > benign >
// unknown), or VerdictNone when none has an opinion.
func Strongest(vs ...providers.Verdict) string {
	best := providers.VerdictNone
	for _, v := range vs {
		if v.Rank() > best.Rank() {
			best = v
		}
	}
	if best == providers.VerdictNone {
		return VerdictNone
	}
	return string(best)
}

// Row is one IP's combined intel, column for column DECNET's attacker_intel
// plus per-provider status. A nil pointer or slice is a column that was not
// answered (NULL), never an empty value standing in for one.
type Row struct {
	AttackerIP    string `json:"attacker_ip"`
	AttackerUUID  string `json:"attacker_uuid,omitempty"`
	SchemaVersion int    `json:"schema_version"`

	GreyNoiseClassification *string    `json:"greynoise_classification"`
	GreyNoiseName           *string    `json:"greynoise_name"`
	GreyNoiseTags           []string   `json:"greynoise_tags"`
	GreyNoiseRaw            *string    `json:"greynoise_raw"`
	GreyNoiseQueriedAt      *time.Time `json:"greynoise_queried_at"`

	AbuseIPDBScore      *int       `json:"abuseipdb_score"`
	AbuseIPDBCategories []int      `json:"abuseipdb_categories"`
	AbuseIPDBRaw        *string    `json:"abuseipdb_raw"`
	AbuseIPDBQueriedAt  *time.Time `json:"abuseipdb_queried_at"`

	FeodoListed        *bool      `json:"feodo_listed"`
	FeodoMalwareFamily *string    `json:"feodo_malware_family"`
	FeodoRaw           *string    `json:"feodo_raw"`
	FeodoQueriedAt     *time.Time `json:"feodo_queried_at"`

	ThreatFoxListed          *bool      `json:"threatfox_listed"`
	ThreatFoxThreatTypes     []string   `json:"threatfox_threat_types"`
	ThreatFoxIOCTypes        []string   `json:"threatfox_ioc_types"`
	ThreatFoxMalwareFamilies []string   `json:"threatfox_malware_families"`
	ThreatFoxRaw             *string    `json:"threatfox_raw"`
	ThreatFoxQueriedAt       *time.Time `json:"threatfox_queried_at"`

	// extra holds the bulk lists' answers and the address's origin, which
	// only some rows have (see List and Origin).
	extra *rowExtra

	AggregateVerdict Aggregate `json:"aggregate_verdict"`
	// Providers are the configured providers, in order.
	Providers []string `json:"providers"`
	// Status says, per provider, "ok" or why there is no answer.
	Status Statuses `json:"provider_status"`
	// verdicts are the providers' own opinions that the aggregate combines.
	verdicts  [providers.NumProviders]providers.Verdict
	CachedAt  time.Time `json:"cached_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// NumLists is how many bulk lists a row has columns for.
const NumLists = 3

// rowExtra is what only some rows have: the bulk lists' answers (written
// as <list>_* columns, see TableRow's and Enrichment's JSON) and where the
// address is routed from, from the operator's MMDB files (nil: no file, or
// not in it; not a provider: no status, no verdict). Rows are cached by the
// million and most have neither: behind a pointer, they cost 8 bytes.
type rowExtra struct {
	lists   [NumLists]ListAnswer
	asn     *uint32
	asOrg   *string
	country *string
}

func (r *Row) ext() *rowExtra {
	if r.extra == nil {
		r.extra = &rowExtra{}
	}
	return r.extra
}

// hasListStatus reports whether any bulk list has a status in the row.
func (r *Row) hasListStatus() bool {
	for _, st := range r.Status.of[numCore:] {
		if st != "" {
			return true
		}
	}
	return false
}

// List is the i-th bulk list's answer (providers.ListNames order); zero
// when it has none.
func (r *Row) List(i int) ListAnswer {
	if r.extra == nil {
		return ListAnswer{}
	}
	return r.extra.lists[i]
}

// lists are every bulk list's answer (zero where none).
func (r *Row) lists() [NumLists]ListAnswer {
	if r.extra == nil {
		return [NumLists]ListAnswer{}
	}
	return r.extra.lists
}

// SetList records the i-th bulk list's answer.
func (r *Row) SetList(i int, l ListAnswer) { r.ext().lists[i] = l }

// Origin is the address's ASN, AS organisation and country, nil where
// unknown.
func (r *Row) Origin() (asn *uint32, org, country *string) {
	if r.extra == nil {
		return nil, nil, nil
	}
	return r.extra.asn, r.extra.asOrg, r.extra.country
}

// SetOrigin records where the address is routed from.
func (r *Row) SetOrigin(asn *uint32, org, country *string) {
	if r.extra == nil && asn == nil && org == nil && country == nil {
		return
	}
	e := r.ext()
	e.asn, e.asOrg, e.country = asn, org, country
}

// ListAnswer is a bulk list's columns in a row.
type ListAnswer struct {
	Listed    *bool
	Score     *int
	Tags      []string
	Raw       *string
	QueriedAt *time.Time
}

// Statuses are the providers' statuses, kept in an array (rows are cached
// by the million: a map per row costs more than the row) and written as a
// JSON object of the configured providers.
type Statuses struct {
	of         [providers.NumProviders]string
	configured []string
}

// Of is provider's status: "ok", an error kind, "deferred", or "" when it
// has not been asked.
func (s *Statuses) Of(provider string) string {
	if i := providers.Index(provider); i >= 0 {
		return s.of[i]
	}
	return ""
}

func (s *Statuses) set(provider, status string) {
	if i := providers.Index(provider); i >= 0 {
		s.of[i] = status
	}
}

// MarshalJSON writes {"provider": "status", …} for the configured providers.
func (s Statuses) MarshalJSON() ([]byte, error) {
	b := []byte{'{'}
	for i, p := range s.configured {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendQuote(b, p)
		b = append(b, ':')
		b = strconv.AppendQuote(b, s.Of(p))
	}
	return append(b, '}'), nil
}

// UnmarshalJSON reads what MarshalJSON wrote (warm start from storage).
func (s *Statuses) UnmarshalJSON(data []byte) error {
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	for p, st := range m {
		s.set(p, st)
		s.configured = append(s.configured, p)
	}
	return nil
}

// NewRow starts the row of ip for the configured providers, none answered.
func NewRow(ip string, configured []string) *Row {
	r := &Row{
		AttackerIP:       ip,
		SchemaVersion:    SchemaVersion,
		Providers:        configured,
		Status:           Statuses{configured: configured},
		AggregateVerdict: VerdictNone,
	}
	return r
}

// Merge applies one provider's result. An answer fills the provider's
// columns (replacing an older answer); a failure never clobbers an answer:
// a provider that had one keeps it, marked stale, and one that had none
// records why.
func (r *Row) Merge(res providers.Result) {
	if res.ErrKind == providers.ErrCovered {
		// A bulk list answered for this provider: its earlier answer, if
		// any, is not current, and it will not be asked.
		r.Status.set(res.Provider, string(providers.ErrCovered))
		if i := providers.Index(res.Provider); i >= 0 {
			r.verdicts[i] = providers.VerdictNone
		}
		r.recompute()
		return
	}
	if !res.OK() {
		r.markUnanswered(res.Provider, string(res.ErrKind))
		return
	}
	r.Status.set(res.Provider, StatusOK)
	if i := providers.Index(res.Provider); i >= 0 {
		r.verdicts[i] = res.Verdict
	}
	at := res.FetchedAt.UTC()
	raw := rawString(res.Raw)
	switch {
	case res.GreyNoise != nil:
		d := res.GreyNoise
		r.GreyNoiseClassification, r.GreyNoiseName = strOrNil(d.Classification), strOrNil(d.Name)
		r.GreyNoiseTags = nonNil(d.Tags)
		r.GreyNoiseRaw, r.GreyNoiseQueriedAt = raw, &at
	case res.AbuseIPDB != nil:
		d := res.AbuseIPDB
		score := d.Score
		r.AbuseIPDBScore = &score
		r.AbuseIPDBCategories = d.Categories
		if r.AbuseIPDBCategories == nil {
			r.AbuseIPDBCategories = []int{}
		}
		r.AbuseIPDBRaw, r.AbuseIPDBQueriedAt = raw, &at
	case res.Feodo != nil:
		d := res.Feodo
		listed := d.Listed
		r.FeodoListed = &listed
		r.FeodoMalwareFamily = strOrNil(d.MalwareFamily)
		r.FeodoRaw, r.FeodoQueriedAt = raw, &at
	case res.ThreatFox != nil:
		d := res.ThreatFox
		listed := d.Listed
		r.ThreatFoxListed = &listed
		r.ThreatFoxThreatTypes, r.ThreatFoxIOCTypes = nonNil(d.ThreatTypes), nonNil(d.IOCTypes)
		r.ThreatFoxMalwareFamilies = nonNil(d.MalwareFamilies)
		r.ThreatFoxRaw, r.ThreatFoxQueriedAt = raw, &at
	case res.List != nil:
		if i := providers.ListIndex(res.Provider); i >= 0 {
			d := res.List
			listed := d.Listed
			r.SetList(i, ListAnswer{Listed: &listed, Score: d.Score, Tags: nonNil(d.Tags), Raw: raw, QueriedAt: &at})
		}
	}
	r.recompute()
}

// MarkDeferred records that provider had not answered by max_wait (unless
// it has an answer already).
func (r *Row) MarkDeferred(provider string) { r.markUnanswered(provider, StatusDeferred) }

// MarkReserved records that provider's last calls were kept for higher
// priority attackers.
func (r *Row) MarkReserved(provider string) { r.markUnanswered(provider, StatusReserved) }

func (r *Row) markUnanswered(provider, status string) {
	switch r.Status.Of(provider) {
	case StatusOK, StatusStale:
		r.Status.set(provider, StatusStale)
	default:
		r.Status.set(provider, status)
	}
}

// HasAnswer reports whether provider's columns hold an answer (fresh or
// stale).
func (r *Row) HasAnswer(provider string) bool {
	s := r.Status.Of(provider)
	return s == StatusOK || s == StatusStale
}

// SameStatuses reports whether r and o record the same status for every
// provider: a lookup that got no new answer and changed no status changed
// nothing worth a new version.
func (r *Row) SameStatuses(o *Row) bool { return r.Status.of == o.Status.of }

// AnsweredBefore reports whether provider's answer is known to have been
// fetched before t.
func (r *Row) AnsweredBefore(provider string, t time.Time) bool {
	var at *time.Time
	switch provider {
	case providers.NameGreyNoise:
		at = r.GreyNoiseQueriedAt
	case providers.NameAbuseIPDB:
		at = r.AbuseIPDBQueriedAt
	case providers.NameFeodo:
		at = r.FeodoQueriedAt
	case providers.NameThreatFox:
		at = r.ThreatFoxQueriedAt
	default:
		if i := providers.ListIndex(provider); i >= 0 {
			at = r.List(i).QueriedAt
		}
	}
	return at != nil && at.Before(t)
}

// Verdict is provider's own opinion, VerdictNone when it has none.
func (r *Row) Verdict(provider string) providers.Verdict {
	if i := providers.Index(provider); i >= 0 {
		return r.verdicts[i]
	}
	return providers.VerdictNone
}

func (r *Row) recompute() {
	r.AggregateVerdict = Aggregate(Strongest(r.verdicts[:]...))
}

// Pending lists the configured providers worth asking again: no answer yet,
// a stale answer, or a failure that time may fix (not disabled, not
// skipped).
func (r *Row) Pending() []string {
	var out []string
	for _, p := range r.Providers {
		switch s := r.Status.Of(p); s {
		case StatusOK, string(providers.ErrDisabled), string(providers.ErrSkipped), string(providers.ErrCovered):
		default:
			out = append(out, p)
		}
	}
	return out
}

// Complete reports whether nothing is left to ask: the row then lives for
// the full TTL, a partial one only for the negative TTL.
func (r *Row) Complete() bool { return len(r.Pending()) == 0 }

// HasRaw reports whether the row holds any provider's raw response.
func (r *Row) HasRaw() bool {
	for raw := range r.raws {
		if *raw != nil {
			return true
		}
	}
	return false
}

// StripRaw drops the providers' raw responses, which dominate a row's size,
// for rows kept only to answer lookups.
func (r *Row) StripRaw() {
	for raw := range r.raws {
		*raw = nil
	}
}

// raws yields each of the row's raw-response fields: the four per-IP
// providers' and each bulk list's.
func (r *Row) raws(yield func(**string) bool) {
	for _, raw := range [...]**string{&r.GreyNoiseRaw, &r.AbuseIPDBRaw, &r.FeodoRaw, &r.ThreatFoxRaw} {
		if !yield(raw) {
			return
		}
	}
	if r.extra != nil {
		for i := range r.extra.lists {
			if !yield(&r.extra.lists[i].Raw) {
				return
			}
		}
	}
}

// Listed reports whether a feed provider (Feodo or a bulk list) lists the
// IP in the row's answer: what skip_when asks.
func (r *Row) Listed(provider string) bool {
	if !r.HasAnswer(provider) {
		return false
	}
	if provider == providers.NameFeodo {
		return r.FeodoListed != nil && *r.FeodoListed
	}
	if i := providers.ListIndex(provider); i >= 0 {
		l := r.List(i)
		return l.Listed != nil && *l.Listed
	}
	return false
}

// Clone is a deep enough copy for a cached row to be merged into without
// racing readers of the original.
func (r *Row) Clone() *Row {
	c := *r // statuses and verdicts are arrays: copied by value
	if r.extra != nil {
		e := *r.extra
		c.extra = &e
	}
	return &c
}

func strOrNil(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func rawString(b []byte) *string {
	if len(b) == 0 {
		return nil
	}
	s := string(b)
	return &s
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Enrichment is the row as DECNET's attacker.intel.enriched consumers expect
// it, written into events at the processor's target.
type Enrichment struct {
	AttackerIP               string    `json:"attacker_ip"`
	AggregateVerdict         Aggregate `json:"aggregate_verdict"`
	Providers                []string  `json:"providers"`
	AbuseIPDBScore           *int      `json:"abuseipdb_score"`
	AbuseIPDBCategories      []int     `json:"abuseipdb_categories"`
	GreyNoiseClassification  *string   `json:"greynoise_classification"`
	GreyNoiseName            *string   `json:"greynoise_name"`
	GreyNoiseTags            []string  `json:"greynoise_tags"`
	FeodoListed              *bool     `json:"feodo_listed"`
	FeodoMalwareFamily       *string   `json:"feodo_malware_family"`
	ThreatFoxListed          *bool     `json:"threatfox_listed"`
	ThreatFoxThreatTypes     []string  `json:"threatfox_threat_types"`
	ThreatFoxIOCTypes        []string  `json:"threatfox_ioc_types"`
	ThreatFoxMalwareFamilies []string  `json:"threatfox_malware_families"`
	ASN                      *uint32   `json:"asn"`
	ASOrg                    *string   `json:"as_org"`
	Country                  *string   `json:"country"`
	ProviderStatus           Statuses  `json:"provider_status"`
	CachedAt                 time.Time `json:"cached_at"`
	ExpiresAt                time.Time `json:"expires_at"`
	// lists are written as <list>_listed, <list>_score and <list>_tags,
	// for the configured lists.
	lists      [NumLists]ListAnswer
	configured []string
}

// MarshalJSON writes the enrichment with its configured lists' columns.
func (e Enrichment) MarshalJSON() ([]byte, error) {
	type plain Enrichment
	b, err := json.Marshal(plain(e))
	if err != nil {
		return nil, err
	}
	return appendLists(b, &e.lists, e.configured, nil), nil
}

// Enrichment is the consumer-facing view of the row.
func (r *Row) Enrichment() Enrichment {
	e := Enrichment{
		AttackerIP: r.AttackerIP, AggregateVerdict: r.AggregateVerdict, Providers: r.Providers,
		AbuseIPDBScore: r.AbuseIPDBScore, AbuseIPDBCategories: r.AbuseIPDBCategories,
		GreyNoiseClassification: r.GreyNoiseClassification, GreyNoiseName: r.GreyNoiseName, GreyNoiseTags: r.GreyNoiseTags,
		FeodoListed: r.FeodoListed, FeodoMalwareFamily: r.FeodoMalwareFamily,
		ThreatFoxListed: r.ThreatFoxListed, ThreatFoxThreatTypes: r.ThreatFoxThreatTypes, ThreatFoxIOCTypes: r.ThreatFoxIOCTypes,
		ThreatFoxMalwareFamilies: r.ThreatFoxMalwareFamilies, ProviderStatus: r.Status,
		CachedAt: r.CachedAt, ExpiresAt: r.ExpiresAt,
		configured: r.Providers,
	}
	e.ASN, e.ASOrg, e.Country = r.Origin()
	e.lists = r.lists()
	return e
}

// TableRow is the row as the attacker_intel table stores it: the row's
// columns plus one status column per provider and the version that lets a
// ReplacingMergeTree keep the newest enrichment of an IP.
type TableRow struct {
	*Row
	GreyNoiseStatus  string  `json:"greynoise_status"`
	AbuseIPDBStatus  string  `json:"abuseipdb_status"`
	FeodoStatus      string  `json:"feodo_status"`
	ThreatFoxStatus  string  `json:"threatfox_status"`
	GreyNoiseVerdict *string `json:"greynoise_verdict"`
	AbuseIPDBVerdict *string `json:"abuseipdb_verdict"`
	FeodoVerdict     *string `json:"feodo_verdict"`
	ThreatFoxVerdict *string `json:"threatfox_verdict"`
	Version          uint64  `json:"version"`
	// Where the address is routed from, NULL where unknown.
	ASN     *uint32 `json:"asn"`
	ASOrg   *string `json:"as_org"`
	Country *string `json:"country"`
}

// MarshalJSON writes the table row with every list's columns (the table
// has them all, NULL for a list not configured).
func (t TableRow) MarshalJSON() ([]byte, error) {
	type plain TableRow
	b, err := json.Marshal(plain(t))
	if err != nil {
		return nil, err
	}
	lists := t.Row.lists()
	return appendLists(b, &lists, providers.ListNames, t.Row), nil
}

// appendLists adds the lists' columns to the JSON object b: listed, score
// and tags for each list in names, and with a row (the table's shape) raw,
// queried_at, status and verdict too.
func appendLists(b []byte, lists *[NumLists]ListAnswer, names []string, row *Row) []byte {
	b = b[:len(b)-1] // the closing brace
	field := func(name, col string, v any) {
		b = append(b, ',', '"')
		b = append(b, name...) // list and column names: plain ASCII
		b = append(b, '_')
		b = append(b, col...)
		b = append(b, '"', ':')
		b = appendJSON(b, v)
	}
	for _, name := range names {
		i := providers.ListIndex(name)
		if i < 0 {
			continue
		}
		l := lists[i]
		tags := l.Tags
		if tags == nil {
			tags = []string{}
		}
		field(name, "listed", l.Listed)
		field(name, "score", l.Score)
		field(name, "tags", tags)
		if row != nil {
			field(name, "raw", l.Raw)
			field(name, "queried_at", l.QueriedAt)
			var status *string // NULL: not configured
			if st := row.Status.Of(name); st != "" {
				status = &st
			}
			field(name, "status", status)
			field(name, "verdict", row.storedVerdict(name))
		}
	}
	return append(b, '}')
}

// appendJSON appends v's JSON encoding: the list columns' scalars (*bool,
// *int, *string's NULL) directly (a row has 21 list columns, and
// json.Marshal of each was most of a row's encoding), anything else
// through encoding/json.
func appendJSON(b []byte, v any) []byte {
	switch x := v.(type) {
	case *bool:
		if x == nil {
			return append(b, "null"...)
		}
		return strconv.AppendBool(b, *x)
	case *int:
		if x == nil {
			return append(b, "null"...)
		}
		return strconv.AppendInt(b, int64(*x), 10)
	case *string:
		if x == nil {
			return append(b, "null"...)
		}
		v = *x
	}
	enc, err := json.Marshal(v)
	if err != nil {
		return append(b, "null"...)
	}
	return append(b, enc...)
}

// Table is the row in the attacker_intel table's shape.
func (r *Row) Table() TableRow {
	t := TableRow{
		Row:             r,
		GreyNoiseStatus: r.Status.Of(providers.NameGreyNoise),
		AbuseIPDBStatus: r.Status.Of(providers.NameAbuseIPDB),
		FeodoStatus:     r.Status.Of(providers.NameFeodo),
		ThreatFoxStatus: r.Status.Of(providers.NameThreatFox),
		// Each provider's own verdict is stored, so that a row read back
		// (warm start, shared lookups) reads exactly as it was decoded.
		GreyNoiseVerdict: r.storedVerdict(providers.NameGreyNoise),
		AbuseIPDBVerdict: r.storedVerdict(providers.NameAbuseIPDB),
		FeodoVerdict:     r.storedVerdict(providers.NameFeodo),
		ThreatFoxVerdict: r.storedVerdict(providers.NameThreatFox),
		Version:          uint64(r.CachedAt.UnixNano()),
	}
	t.ASN, t.ASOrg, t.Country = r.Origin()
	return t
}

func (r *Row) storedVerdict(provider string) *string {
	if !r.HasAnswer(provider) {
		return nil
	}
	v := string(r.Verdict(provider))
	return &v
}

// Restore sets a provider's status and verdict on a row read back from
// storage (warm start), where the columns are filled in directly, and
// recomputes the aggregate from the providers' verdicts.
func (r *Row) Restore(provider, status string, v providers.Verdict) {
	r.Status.set(provider, status)
	if i := providers.Index(provider); i >= 0 && (status == StatusOK || status == StatusStale) {
		r.verdicts[i] = v
	}
	r.recompute()
}
