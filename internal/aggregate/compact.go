package aggregate

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/decnet/decnet-stream/internal/providers"
)

// Compact is a row without raw responses, packed for a cache that holds a
// million IPs: strings and lists from providers (classifications, malware
// families, threat types) repeat across IPs, so they are interned and stored
// as 4-byte ids. It round-trips with Row exactly, raw responses aside.
type Compact struct {
	queried                   [numCore]int64 // unix ns; 0 = not answered
	cachedAt, expiresAt       int64
	gnClass, gnName, feodoFam uint32 // interned strings; 0 = nil
	gnTags, tfThreat, tfIOC   uint32 // interned lists; 0 = nil
	tfFam, abCats             uint32
	abScore                   int16 // -1 = nil
	status                    [numCore]uint8
	verdicts                  [numCore]uint8
	feodoListed, tfListed     int8 // -1 = nil
	// extra is the bulk lists and the origin, for the rows that have
	// them: most cached rows do not, and pay 8 bytes for it.
	extra *compactExtra
}

// numCore are DECNET's four providers, at the start of providers.Index.
const numCore = providers.NumProviders - NumLists

type compactExtra struct {
	queried        [NumLists]int64
	status         [NumLists]uint8
	verdicts       [NumLists]uint8
	listed         [NumLists]int8   // -1 = nil
	score          [NumLists]int16  // -1 = nil
	tags           [NumLists]uint32 // interned lists; 0 = nil
	asn            int64            // -1 = nil
	asOrg, country uint32           // interned strings; 0 = nil
}

// interned is the process-wide table of provider strings and lists. It is
// bounded: past maxInterned values, Pack reports that the row cannot be
// packed and the caller keeps the full row.
var interned = struct {
	sync.RWMutex
	ids    map[string]uint32
	values []string // id → value (lists are \x00-joined)
}{ids: map[string]uint32{}, values: []string{""}}

const maxInterned = 1 << 20

const listMark = "\x01" // distinguishes an empty list from an absent one

func intern(s string) (uint32, bool) {
	interned.RLock()
	id, ok := interned.ids[s]
	interned.RUnlock()
	if ok {
		return id, true
	}
	interned.Lock()
	defer interned.Unlock()
	if id, ok := interned.ids[s]; ok {
		return id, true
	}
	if len(interned.values) >= maxInterned {
		return 0, false
	}
	id = uint32(len(interned.values))
	interned.values = append(interned.values, s)
	interned.ids[s] = id
	return id, true
}

func lookup(id uint32) string {
	interned.RLock()
	defer interned.RUnlock()
	return interned.values[id]
}

type packer struct{ ok bool }

func (p *packer) str(s *string) uint32 {
	if s == nil {
		return 0
	}
	id, ok := intern("s" + *s)
	p.ok = p.ok && ok
	return id
}

func (p *packer) list(l []string) uint32 {
	if l == nil {
		return 0
	}
	id, ok := intern(listMark + strings.Join(l, "\x00"))
	p.ok = p.ok && ok
	return id
}

func (p *packer) ints(l []int) uint32 {
	if l == nil {
		return 0
	}
	s := make([]string, len(l))
	for i, v := range l {
		s[i] = strconv.Itoa(v)
	}
	return p.list(s)
}

func unstr(id uint32) *string {
	if id == 0 {
		return nil
	}
	s := lookup(id)[1:]
	return &s
}

func unlist(id uint32) []string {
	if id == 0 {
		return nil
	}
	s := lookup(id)[len(listMark):]
	if s == "" {
		return []string{}
	}
	return strings.Split(s, "\x00")
}

func unints(id uint32) []int {
	l := unlist(id)
	if l == nil {
		return nil
	}
	out := make([]int, len(l))
	for i, s := range l {
		out[i], _ = strconv.Atoi(s)
	}
	return out
}

var statusCodes = []string{"", StatusOK, StatusDeferred, StatusReserved, StatusStale,
	string(providers.ErrNetwork), string(providers.ErrTimeout), string(providers.ErrHTTPStatus), string(providers.ErrParse),
	string(providers.ErrAuth), string(providers.ErrRateLimited), string(providers.ErrQuotaExhausted),
	string(providers.ErrDisabled), string(providers.ErrSkipped), string(providers.ErrCovered)}

var verdictCodes = []providers.Verdict{providers.VerdictNone, providers.VerdictUnknown, providers.VerdictBenign,
	providers.VerdictSuspicious, providers.VerdictMalicious}

func code[T comparable](table []T, v T) (uint8, bool) {
	for i, t := range table {
		if t == v {
			return uint8(i), true
		}
	}
	return 0, false
}

func nanos(t *time.Time) int64 {
	if t == nil {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) *time.Time {
	if n == 0 {
		return nil
	}
	t := time.Unix(0, n).UTC()
	return &t
}

func tri(b *bool) int8 {
	if b == nil {
		return -1
	}
	if *b {
		return 1
	}
	return 0
}

func untri(v int8) *bool {
	if v < 0 {
		return nil
	}
	b := v == 1
	return &b
}

// Pack packs r (raw responses are dropped). It reports false when r holds
// something the compact form cannot: keep the full row then.
func (r *Row) Pack() (Compact, bool) {
	p := packer{ok: true}
	c := Compact{
		queried:   [numCore]int64{nanos(r.GreyNoiseQueriedAt), nanos(r.AbuseIPDBQueriedAt), nanos(r.FeodoQueriedAt), nanos(r.ThreatFoxQueriedAt)},
		cachedAt:  r.CachedAt.UnixNano(),
		expiresAt: r.ExpiresAt.UnixNano(),
		gnClass:   p.str(r.GreyNoiseClassification), gnName: p.str(r.GreyNoiseName), feodoFam: p.str(r.FeodoMalwareFamily),
		gnTags: p.list(r.GreyNoiseTags), tfThreat: p.list(r.ThreatFoxThreatTypes), tfIOC: p.list(r.ThreatFoxIOCTypes),
		tfFam: p.list(r.ThreatFoxMalwareFamilies), abCats: p.ints(r.AbuseIPDBCategories),
		abScore:     -1,
		feodoListed: tri(r.FeodoListed), tfListed: tri(r.ThreatFoxListed),
	}
	if r.AbuseIPDBScore != nil {
		c.abScore = int16(*r.AbuseIPDBScore)
	}
	for i := range c.status {
		st, ok := code(statusCodes, r.Status.of[i])
		v, vok := code(verdictCodes, r.verdicts[i])
		p.ok = p.ok && ok && vok
		c.status[i], c.verdicts[i] = st, v
	}
	if r.extra != nil || r.hasListStatus() {
		x := &compactExtra{asn: -1}
		for i := range NumLists {
			l, k := r.List(i), numCore+i
			x.queried[i] = nanos(l.QueriedAt)
			x.listed[i], x.score[i], x.tags[i] = tri(l.Listed), -1, p.list(l.Tags)
			if l.Score != nil {
				x.score[i] = int16(*l.Score)
			}
			st, ok := code(statusCodes, r.Status.of[k])
			v, vok := code(verdictCodes, r.verdicts[k])
			p.ok = p.ok && ok && vok
			x.status[i], x.verdicts[i] = st, v
		}
		asn, org, country := r.Origin()
		x.asOrg, x.country = p.str(org), p.str(country)
		if asn != nil {
			x.asn = int64(*asn)
		}
		c.extra = x
	}
	return c, p.ok && r.AttackerUUID == "" && r.CachedAt.Location() == time.UTC
}

// Unpack rebuilds the row of ip for the configured providers.
func (c *Compact) Unpack(ip string, configured []string) *Row {
	r := NewRow(ip, configured)
	r.GreyNoiseClassification, r.GreyNoiseName, r.FeodoMalwareFamily = unstr(c.gnClass), unstr(c.gnName), unstr(c.feodoFam)
	r.GreyNoiseTags, r.ThreatFoxThreatTypes, r.ThreatFoxIOCTypes = unlist(c.gnTags), unlist(c.tfThreat), unlist(c.tfIOC)
	r.ThreatFoxMalwareFamilies, r.AbuseIPDBCategories = unlist(c.tfFam), unints(c.abCats)
	r.GreyNoiseQueriedAt, r.AbuseIPDBQueriedAt = fromNanos(c.queried[0]), fromNanos(c.queried[1])
	r.FeodoQueriedAt, r.ThreatFoxQueriedAt = fromNanos(c.queried[2]), fromNanos(c.queried[3])
	if c.abScore >= 0 {
		s := int(c.abScore)
		r.AbuseIPDBScore = &s
	}
	r.FeodoListed, r.ThreatFoxListed = untri(c.feodoListed), untri(c.tfListed)
	for i := range c.status {
		r.Status.of[i] = statusCodes[c.status[i]]
		r.verdicts[i] = verdictCodes[c.verdicts[i]]
	}
	if x := c.extra; x != nil {
		for i := range NumLists {
			l := ListAnswer{Listed: untri(x.listed[i]), Tags: unlist(x.tags[i]), QueriedAt: fromNanos(x.queried[i])}
			if x.score[i] >= 0 {
				s := int(x.score[i])
				l.Score = &s
			}
			if l.Listed != nil || l.Tags != nil || l.QueriedAt != nil || l.Score != nil {
				r.SetList(i, l)
			}
			r.Status.of[numCore+i] = statusCodes[x.status[i]]
			r.verdicts[numCore+i] = verdictCodes[x.verdicts[i]]
		}
		var asn *uint32
		if x.asn >= 0 {
			a := uint32(x.asn)
			asn = &a
		}
		r.SetOrigin(asn, unstr(x.asOrg), unstr(x.country))
	}
	r.recompute()
	r.CachedAt = time.Unix(0, c.cachedAt).UTC()
	r.ExpiresAt = time.Unix(0, c.expiresAt).UTC()
	return r
}

// Verdict is the aggregate verdict without unpacking.
func (c *Compact) Verdict() string {
	best := providers.VerdictNone
	stronger := func(vs []uint8) {
		for _, v := range vs {
			if verdictCodes[v].Rank() > best.Rank() {
				best = verdictCodes[v]
			}
		}
	}
	stronger(c.verdicts[:])
	if c.extra != nil {
		stronger(c.extra.verdicts[:])
	}
	if best == providers.VerdictNone {
		return VerdictNone
	}
	return string(best)
}
