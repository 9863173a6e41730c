package intel_processor

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strconv"
	"sync"
	"time"
	"unsafe"

	"github.com/tidwall/gjson"

	"github.com/decnet/decnet-stream/internal/providers"
)

// The attacker.intel.enriched envelope, written once per emitted row so
// that the outputs publishing it copy bytes (`mapping: root = @<key>`)
// instead of running a Bloblang mapping that decodes the whole event and
// its row: in a storm of new attackers that mapping was a fifth of the
// process's CPU.
const (
	enrichedTopic = "attacker.intel.enriched"
	enrichedType  = "intel.enriched"
)

// envelopeDrops are the row's members DECNET's enriched payload leaves
// out: raw answers and bookkeeping stay in ClickHouse.
var envelopeDrops = func() map[string]bool {
	drop := map[string]bool{"schema_version": true, "version": true,
		"carrier_topic": true, "carrier_partition": true, "carrier_offset": true}
	names := append([]string{providers.NameGreyNoise, providers.NameAbuseIPDB, providers.NameFeodo, providers.NameThreatFox},
		providers.ListNames...)
	for _, n := range names {
		for _, col := range []string{"_raw", "_queried_at", "_status"} {
			drop[n+col] = true
		}
	}
	return drop
}()

// envelopeLists are the list members DECNET's payload always carries as
// arrays: [] when a provider said nothing.
var envelopeLists = [...]string{"greynoise_tags", "abuseipdb_categories",
	"threatfox_threat_types", "threatfox_ioc_types", "threatfox_malware_families"}

// envelope writes the v1 attacker.intel.enriched event for the row row
// (its JSON as emitted): DECNET's payload fields, "providers" (those whose
// answer the row holds, sorted), and the row's list members as arrays. Its
// id is the row's identity, 32 hex characters of sha256(ip "/" version), so
// every copy of one enrichment (Kafka, DECNET's bus, a replay) has the same
// id; a row with neither version nor cached_at gets a random one. Its time is the row's
// cached_at (now without one).
//
// The result is exactly its own size: it is kept with its message until
// both outputs have it, and a buffer sized for the row (raw answers
// included) held twice the envelope's bytes. It is built in a pooled
// buffer and copied out.
func envelope(row []byte, now time.Time) []byte {
	buf := scratchPool.Get().(*[]byte)
	*buf = appendEnvelope((*buf)[:0], row, now)
	env := make([]byte, len(*buf))
	copy(env, *buf)
	putScratch(buf)
	return env
}

// scratchPool holds buffers for what write and envelope build before they
// copy out the result at its size: a row's intel member, an envelope.
var scratchPool = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// putScratch returns buf to the pool, unless one outsized row (a provider's
// raw answer can be large) grew it past what rows usually need: the pool
// would keep it.
func putScratch(buf *[]byte) {
	if cap(*buf) <= 64<<10 {
		scratchPool.Put(buf)
	}
}

// appendEnvelope appends the envelope of row to out (see envelope).
func appendEnvelope(out, row []byte, now time.Time) []byte {
	if len(row) == 0 {
		row = []byte("{}")
	}
	// Read in place (ParseBytes would copy the row): every value read is
	// copied into the envelope before the function returns.
	r := gjson.Parse(unsafe.String(&row[0], len(row)))
	// One pass for what the header needs and which lists the row lacks: a
	// Get per member would scan the row from its start each time.
	var h struct {
		ip, cachedAt    string
		version, status gjson.Result
		hasList         [len(envelopeLists)]bool
	}
	r.ForEach(func(k, v gjson.Result) bool {
		switch k.Str {
		case "attacker_ip":
			h.ip = v.Str
		case "cached_at":
			h.cachedAt = v.Str
		case "version":
			h.version = v
		case "provider_status":
			h.status = v
		default:
			if i := slices.Index(envelopeLists[:], k.Str); i >= 0 {
				h.hasList[i] = true
			}
		}
		return true
	})
	at, atErr := time.Parse(time.RFC3339Nano, h.cachedAt)
	// The row's version is its cached_at in nanoseconds; a row written
	// without its bookkeeping (include_raw: false) has only cached_at.
	v := h.version.Raw
	if h.version.Uint() == 0 {
		v = ""
		if atErr == nil {
			v = strconv.FormatInt(at.UnixNano(), 10)
		}
	}
	out = append(out, `{"v":1,"id":"`...)
	if v != "" {
		sum := sha256.Sum256([]byte(h.ip + "/" + v))
		out = hex.AppendEncode(out, sum[:16])
	} else {
		var id [16]byte
		_, _ = rand.Read(id[:])
		out = hex.AppendEncode(out, id[:])
	}
	out = append(out, `","topic":"`+enrichedTopic+`","type":"`+enrichedType+`","ts":`...)
	ts := now
	if atErr == nil {
		ts = at
	}
	out = strconv.AppendFloat(out, float64(ts.UnixMilli())/1000, 'f', -1, 64)
	out = append(out, `,"payload":{`...)
	first := true
	member := func(quoted string) { // a member's name, quoted as in JSON
		if !first {
			out = append(out, ',')
		}
		first = false
		out = append(out, quoted...)
		out = append(out, ':')
	}
	r.ForEach(func(k, v gjson.Result) bool {
		if envelopeDrops[k.Str] || k.Str == "providers" { // providers: written below
			return true
		}
		member(k.Raw)
		if v.Type == gjson.Null && slices.Contains(envelopeLists[:], k.Str) {
			out = append(out, '[', ']')
		} else {
			out = append(out, v.Raw...)
		}
		return true
	})
	for i, k := range envelopeLists {
		if !h.hasList[i] {
			member(`"` + k + `"`)
			out = append(out, '[', ']')
		}
	}
	var answered []string
	h.status.ForEach(func(k, v gjson.Result) bool {
		if v.Str == "ok" || v.Str == "stale" {
			answered = append(answered, k.Raw)
		}
		return true
	})
	slices.Sort(answered) // quoted names of plain ASCII sort as the names do
	member(`"providers"`)
	out = append(out, '[')
	for i, name := range answered {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, name...)
	}
	return append(out, "]}}"...)
}
