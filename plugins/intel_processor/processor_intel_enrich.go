// Package intel_processor adds the intel_enrich processor: threat intel on
// each attacker IP from free-tier providers, deduplicated, cached and
// coalesced, with one enriched event per enrichment.
package intel_processor

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/redpanda-data/benthos/v4/public/bloblang"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
	"golang.org/x/time/rate"

	"github.com/decnet/decnet-stream/internal/aggregate"
	"github.com/decnet/decnet-stream/internal/chstore"
	"github.com/decnet/decnet-stream/internal/enrich"
	"github.com/decnet/decnet-stream/internal/geoip"
	"github.com/decnet/decnet-stream/internal/providers"
	"github.com/decnet/decnet-stream/internal/recordmeta"
)

// Metadata keys this processor writes.
const (
	MetaVerdict = "intel_verdict"
	MetaCache   = "intel_cache"
	MetaSkipped = "intel_skipped"
	MetaError   = "decnet_error"
	// MetaLookup marks a sighting whose IP has no current row: the output
	// sends it to the lookup topic as the lookup request.
	MetaLookup    = "intel_lookup"
	lookupRequest = "request"

	reasonInvalidIP = "invalid_ip"
)

func init() {
	err := service.RegisterBatchProcessor("intel_enrich", spec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchProcessor, error) {
			return newProcessor(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}

type processor struct {
	// scratch holds *batchScratch: a batch's working memory.
	scratch    sync.Pool
	ipPath     string
	ipMetadata string
	// lookupTopic, when set, splits the work: sightings of IPs without a
	// current row leave as lookup requests for this topic, and events read
	// from it are the requests, looked up and emitted.
	lookupTopic string
	// lookupSubjectMeta is the metadata key a lookup request names its
	// sighting's subject in (empty: none is written).
	lookupSubjectMeta string
	ipMapping         *bloblang.Executor
	priority          *bloblang.Executor
	target            string
	// quotedTarget is `"target"` when target is a plain top-level key.
	quotedTarget []byte
	emitAll      bool
	includeRaw   bool
	envelopeMeta string // the metadata key for the enriched envelope, if any
	guard        *providers.Guard
	engine       *enrich.Engine
	feeds        []providers.Feed
	geo          *geoip.DB
	budgets      *providers.BudgetStore // daily counts, written on a clean stop too
	metrics      *metrics
	store        *chstore.Store  // the shared second-level cache, when on
	ledger       *chstore.Ledger // the shared budget ledger, when on
	log          *service.Logger
}

func newProcessor(conf *service.ParsedConfig, mgr *service.Resources) (*processor, error) {
	p := &processor{log: mgr.Logger(), scratch: sync.Pool{New: func() any { return new(batchScratch) }}}
	var err error
	if p.ipPath, err = conf.FieldString(fIPPath); err != nil {
		return nil, err
	}
	if conf.Contains(fIP) {
		if p.ipMapping, err = conf.FieldBloblang(fIP); err != nil {
			return nil, err
		}
	}
	if p.ipMetadata, err = conf.FieldString(fIPMetadata); err != nil {
		return nil, err
	}
	if p.lookupTopic, err = conf.FieldString(fLookupTopic); err != nil {
		return nil, err
	}
	if p.lookupSubjectMeta, err = conf.FieldString(fLookupSubjectMeta); err != nil {
		return nil, err
	}
	if conf.Contains(fPriority) {
		if p.priority, err = conf.FieldBloblang(fPriority); err != nil {
			return nil, err
		}
	}
	if p.target, err = conf.FieldString(fTarget); err != nil {
		return nil, err
	}
	if p.target == "" {
		return nil, errors.New("target: must not be empty")
	}
	if !strings.ContainsAny(p.target, ".*?|#@\\\"") {
		p.quotedTarget = []byte(strconv.Quote(p.target))
	}
	emit, err := conf.FieldString(fEmit)
	if err != nil {
		return nil, err
	}
	p.emitAll = emit == emitAll
	if p.emitAll && p.lookupTopic != "" {
		return nil, fmt.Errorf("%s: emit: all annotates events in place; it takes no %s", fLookupTopic, fLookupTopic)
	}
	if p.includeRaw, err = conf.FieldBool(fIncludeRaw); err != nil {
		return nil, err
	}
	if p.envelopeMeta, err = conf.FieldString(fEnvelopeMetadata); err != nil {
		return nil, err
	}
	nq, err := conf.FieldStringList(fNeverQuery)
	if err != nil {
		return nil, err
	}
	if p.guard, err = providers.NewGuard(nq); err != nil {
		return nil, err
	}
	if doc, _ := conf.FieldBool(fAllowDocRanges); doc {
		p.guard = p.guard.AllowDocumentationRangesForTesting()
		p.log.Warn("intel_enrich: documentation address ranges are sent to providers (allow_documentation_ranges_for_testing)")
	}
	pconfs, err := parseProviders(conf)
	if err != nil {
		return nil, err
	}
	if len(pconfs) == 0 {
		return nil, fmt.Errorf("%s: at least one enabled provider is required", fProviders)
	}
	stateFile, err := conf.FieldString(fStateFile)
	if err != nil {
		return nil, err
	}
	var shared *providers.Shared
	if conf.Contains(fSharedBudget) {
		if stateFile == "" {
			return nil, fmt.Errorf("%s: needs %s, which names this replica", fSharedBudget, fStateFile)
		}
		sb := conf.Namespace(fSharedBudget)
		dsn, err := sb.FieldString(fWarmDSN)
		if err != nil {
			return nil, err
		}
		table, err := sb.FieldString(fWarmTable)
		if err != nil {
			return nil, err
		}
		if p.ledger, err = chstore.OpenLedger(dsn, table); err != nil {
			return nil, fmt.Errorf("%s: %w", fSharedBudget, err)
		}
		logged := rate.NewLimiter(rate.Every(time.Minute), 1)
		shared = &providers.Shared{Ledger: p.ledger, Replica: chstore.ReplicaName(stateFile), OnError: func(err error) {
			if logged.Allow() {
				p.log.Warnf("intel_enrich: %v; spending stays within the last share known", err)
			}
		}}
	}
	policy, err := parsePolicy(conf)
	if err != nil {
		return nil, err
	}
	feedDir, err := conf.FieldString(fFeedDir)
	if err != nil {
		return nil, err
	}
	provs, feeds, budgets, err := buildProviders(pconfs, p.guard, stateFile, feedDir, shared, &policy)
	if err != nil {
		return nil, err
	}
	p.feeds, p.budgets = feeds, budgets
	registerProviders(provs)
	if budgets != nil && budgets.Warning() != "" {
		p.log.Errorf("intel_enrich: %s", budgets.Warning())
	}
	ec := enrich.Config{Providers: provs, KeepRaw: p.includeRaw, SkipWhen: skipWhen(pconfs)}
	if ec.MaxWait, err = conf.FieldDuration(fMaxWait); err != nil {
		return nil, err
	}
	if ec.RequestTTL, err = conf.FieldDuration(fRequestTTL); err != nil {
		return nil, err
	}
	cache := conf.Namespace(fCache)
	if ec.MaxEntries, err = cache.FieldInt(fMaxEntries); err != nil {
		return nil, err
	}
	if ec.TTL, err = cache.FieldDuration(fTTL); err != nil {
		return nil, err
	}
	if ec.NegativeTTL, err = cache.FieldDuration(fNegativeTTL); err != nil {
		return nil, err
	}
	if ec.Jitter, err = cache.FieldFloat(fJitter); err != nil {
		return nil, err
	}
	if ec.BudgetReserve, err = conf.FieldFloat(fBudgetReserve); err != nil {
		return nil, err
	}
	if ec.PriorityThreshold, err = conf.FieldFloat(fPriorityThreshold); err != nil {
		return nil, err
	}
	if ec.Geo, err = p.openGeoIP(conf.Namespace(fGeoIP)); err != nil {
		return nil, err
	}
	p.metrics = newMetrics(mgr.Metrics(), provs)
	ec.Observer = p.metrics
	if conf.Contains(fWarmStart) {
		ws := conf.Namespace(fWarmStart)
		if on, _ := ws.FieldBool(fLookupOnMiss); on {
			dsn, _ := ws.FieldString(fWarmDSN)
			table, _ := ws.FieldString(fWarmTable)
			store, err := chstore.Open(dsn, table)
			if err != nil {
				return nil, fmt.Errorf("%s.%s: %w", fWarmStart, fLookupOnMiss, err)
			}
			p.store = store
			names := make([]string, 0, len(provs))
			for _, pr := range provs {
				names = append(names, pr.Name())
			}
			ec.SecondLevel = func(ctx context.Context, ip netip.Addr) (*aggregate.Row, enrich.Carrier) {
				st, err := store.Get(ctx, ip, names)
				if err != nil {
					p.log.Debugf("intel_enrich: shared lookup of %s: %v", ip, err)
				}
				if st == nil {
					return nil, enrich.Carrier{}
				}
				return st.Row, enrich.Carrier{Topic: st.Topic, Partition: st.Partition, Offset: st.Offset}
			}
		}
	}
	p.engine = enrich.New(ec)
	if conf.Contains(fWarmStart) {
		p.warmStart(conf.Namespace(fWarmStart), ec.MaxEntries)
	}
	for _, f := range feeds {
		f.Start()
	}
	return p, nil
}

// openGeoIP reads the MMDB files and watches them for new versions; nil
// when none is named.
func (p *processor) openGeoIP(conf *service.ParsedConfig) (func(netip.Addr) (*uint32, *string, *string), error) {
	if !conf.Contains(fGeoFiles) {
		return nil, nil
	}
	named, err := conf.FieldStringList(fGeoFiles)
	if err != nil {
		return nil, err
	}
	files := slices.DeleteFunc(named, func(f string) bool { return strings.TrimSpace(f) == "" })
	if len(files) == 0 {
		return nil, nil
	}
	every, err := conf.FieldDuration(fGeoReload)
	if err != nil {
		return nil, err
	}
	db, err := geoip.Open(files)
	if err != nil {
		return nil, fmt.Errorf("%s.%s: %w", fGeoIP, fGeoFiles, err)
	}
	p.geo = db
	p.log.Infof("intel_enrich: ASN and country from %s", db.Describe())
	db.Watch(every, func(changed bool, err error) {
		if err != nil {
			p.log.Warnf("intel_enrich: %v", err)
		}
		if changed {
			p.log.Infof("intel_enrich: MMDB files reloaded: %s", db.Describe())
		}
	})
	return func(ip netip.Addr) (*uint32, *string, *string) {
		a := db.Lookup(ip)
		return a.ASN, a.Org, a.Country
	}, nil
}

// warmStart preloads the cache from ClickHouse; failing to is not fatal.
func (p *processor) warmStart(conf *service.ParsedConfig, limit int) {
	dsn, _ := conf.FieldString(fWarmDSN)
	table, _ := conf.FieldString(fWarmTable)
	timeout, _ := conf.FieldDuration(fWarmTimeout)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	rows, err := chstore.Load(ctx, dsn, table, limit, p.engine.Names())
	if errors.Is(err, chstore.ErrNoTable) {
		p.log.Infof("intel_enrich: first run: no %s table yet, nothing to warm-start from", table)
		return
	}
	if err != nil {
		p.log.Warnf("intel_enrich: warm start from %s failed, starting cold: %v", table, err)
		return
	}
	loaded := 0
	for _, st := range rows {
		if ip, err := providers.ParseIP(st.Row.AttackerIP); err == nil {
			p.engine.Preload(ip, st.Row, enrich.Carrier{Topic: st.Topic, Partition: st.Partition, Offset: st.Offset})
			loaded++
		}
	}
	p.log.Infof("intel_enrich: warm start loaded %d unexpired rows from %s", loaded, table)
}

// ProcessBatch reads each event's IP without decoding the event and sends
// it down one of three paths: sightings are answered from the cache (a miss
// becomes a lookup request, or, inline, a lookup), lookup requests wait for
// their row and emit it, and with emit: all every event is annotated.
func (p *processor) ProcessBatch(ctx context.Context, batch service.MessageBatch) ([]service.MessageBatch, error) {
	// The batch's provider answers are counted, and the providers' gauges
	// current, by the time it is handed on (the flusher's tick is for
	// answers that came from elsewhere, and for the feeds' age).
	defer p.metrics.flush()
	// A batch's working memory is reused from batch to batch: nearly every
	// event of a batch is a sighting, and on the hot path (all hits) none
	// of it outlives the batch.
	sc := p.scratch.Get().(*batchScratch)
	sightings := requests{reqs: slices.Grow(sc.reqs[:0], len(batch)), index: slices.Grow(sc.index[:0], len(batch))}
	var lookups requests
	keep := append(sc.keep[:0], make([]bool, len(batch))...)
	var answers []enrich.Answer
	defer func() {
		sc.reclaim(sightings, keep, answers)
		p.scratch.Put(sc)
	}()
	for i, msg := range batch {
		if msg.GetError() != nil {
			keep[i] = true // refused upstream: keep its reason for the dead letter
			continue
		}
		ipStr, err := p.ipOf(msg)
		if err != nil {
			p.refuse(msg, err)
			keep[i] = true
			continue
		}
		ip, err := providers.ParseIP(ipStr)
		if err != nil {
			p.refuse(msg, err)
			keep[i] = true
			continue
		}
		if why := p.guard.Check(ip); why != "" {
			// Not an attacker anyone else can tell us about: passes through.
			msg.MetaSetMut(MetaSkipped, why)
			p.metrics.skip(why)
			keep[i] = true
			continue
		}
		r, isLookup := p.request(msg, ip)
		if isLookup {
			lookups.add(r, i)
		} else {
			sightings.add(r, i)
		}
	}

	if p.emitAll {
		answers := p.engine.Annotate(ctx, sightings.reqs, p.priorityOf(batch, sightings.index))
		p.metrics.sightings(answers)
		for k, a := range answers {
			p.emit(batch[sightings.index[k]], a, sightings.reqs[k].Carrier)
			keep[sightings.index[k]] = true
		}
	} else if len(sightings.reqs) > 0 {
		answers = p.engine.SightInto(sc.answers, sightings.reqs, p.lookupTopic != "")
		p.metrics.sightings(answers)
		for k, a := range answers {
			i := sightings.index[k]
			switch {
			case !a.Request: // a repeat sighting, or its lookup is on its way
			case p.lookupTopic != "":
				batch[i].MetaSetMut(MetaLookup, lookupRequest)
				p.nameSubject(batch[i])
				keep[i] = true
			default: // inline: this sighting is its own lookup request
				lookups.add(sightings.reqs[k], i)
			}
		}
	}
	if len(lookups.reqs) > 0 {
		answers := p.engine.Lookup(lookups.reqs, p.priorityOf(batch, lookups.index))
		p.metrics.lookups(answers)
		for k, a := range answers {
			if a.Emit {
				i := lookups.index[k]
				p.emit(batch[i], a, lookups.reqs[k].Carrier)
				keep[i] = true
			}
		}
	}
	// Filtered in place (the batch slice is this call's own): repeat
	// sightings, nearly all of a batch, leave nothing to allocate.
	out := batch[:0]
	for i, msg := range batch {
		if keep[i] {
			out = append(out, msg)
		}
	}
	if len(out) == 0 {
		return nil, nil
	}
	return []service.MessageBatch{out}, nil
}

// batchScratch is one batch's working memory, kept in a pool between
// batches.
type batchScratch struct {
	reqs    []enrich.Request
	index   []int
	keep    []bool
	answers []enrich.Answer
}

// reclaim takes back what the batch grew, emptied for the next batch: a
// pooled request or answer must not keep its address, topic or cache entry
// (and row) alive after the entry is evicted.
func (sc *batchScratch) reclaim(rs requests, keep []bool, answers []enrich.Answer) {
	clear(rs.reqs)
	clear(answers)
	sc.reqs, sc.index, sc.keep = rs.reqs[:0], rs.index[:0], keep[:0]
	if answers != nil {
		sc.answers = answers[:0]
	}
}

// requests are the engine requests of a batch and, for each, its message's
// position.
type requests struct {
	reqs  []enrich.Request
	index []int
}

func (rs *requests) add(r enrich.Request, i int) {
	rs.reqs = append(rs.reqs, r)
	rs.index = append(rs.index, i)
}

// request is msg's engine request, and whether msg is a lookup request (it
// came from the lookup topic) rather than a sighting.
func (p *processor) request(msg *service.Message, ip netip.Addr) (enrich.Request, bool) {
	c := carrierOf(msg)
	return enrich.Request{IP: ip, Carrier: c}, p.lookupTopic != "" && c.Topic == p.lookupTopic
}

// priorityOf runs the priority mapping over the event of a lookup that
// starts (and only then: see enrich.Priority).
func (p *processor) priorityOf(batch service.MessageBatch, index []int) enrich.Priority {
	if p.priority == nil {
		return nil
	}
	return func(k int) float64 {
		// On a copy: the mapping parses the event, and the message would
		// keep the parsed document until its outputs have it.
		v, err := queryValue(batch[index[k]].Copy(), p.priority)
		if err != nil {
			return 0
		}
		return toFloat(v)
	}
}

// emit writes the row into msg; a row that cannot be written refuses msg.
func (p *processor) emit(msg *service.Message, a enrich.Answer, carrier enrich.Carrier) {
	if err := p.write(msg, a, carrier); err != nil {
		p.refuse(msg, err)
	}
}

// nameSubject writes a lookup request's subject into lookupSubjectMeta:
// the sighting's own when it came with one, else the topic it was read from.
func (p *processor) nameSubject(msg *service.Message) {
	if p.lookupSubjectMeta == "" {
		return
	}
	if v, ok := msg.MetaGet(p.lookupSubjectMeta); ok && v != "" {
		return
	}
	if topic, ok := msg.MetaGet(recordmeta.Topic); ok && topic != "" {
		msg.MetaSetMut(p.lookupSubjectMeta, topic)
	}
}

func (p *processor) ipOf(msg *service.Message) (string, error) {
	if p.ipMetadata != "" {
		if v, ok := msg.MetaGet(p.ipMetadata); ok && v != "" {
			return v, nil
		}
		return "", fmt.Errorf("metadata %s is missing", p.ipMetadata)
	}
	if p.ipMapping != nil {
		v, err := queryValue(msg, p.ipMapping)
		if err != nil {
			return "", fmt.Errorf("ip mapping: %w", err)
		}
		s, ok := v.(string)
		if !ok {
			return "", fmt.Errorf("ip mapping returned %T, not a string", v)
		}
		return s, nil
	}
	raw, err := msg.AsBytes()
	if err != nil {
		return "", err
	}
	if len(raw) == 0 {
		return "", fmt.Errorf("%s is missing: empty event", p.ipPath)
	}
	// The result only lives until ParseIP has read it, so it may point into
	// the event's bytes: GetBytes would copy every IP string.
	v := gjson.Get(unsafe.String(&raw[0], len(raw)), p.ipPath)
	if v.Type != gjson.String {
		return "", fmt.Errorf("%s is %s, not an IP address string", p.ipPath, orMissing(v))
	}
	return v.Str, nil
}

// queryValue runs a mapping with the message as `this` and returns its
// value. (Message.BloblangQueryValue gives the mapping no `this`.)
func queryValue(msg *service.Message, m *bloblang.Executor) (any, error) {
	res, err := msg.BloblangQuery(m)
	if err != nil {
		return nil, err
	}
	if res == nil {
		return nil, errors.New("the mapping deleted the value")
	}
	if v, err := res.AsStructured(); err == nil {
		return v, nil
	}
	// A string result is raw bytes, not a JSON document.
	b, err := res.AsBytes()
	return string(b), err
}

func orMissing(v gjson.Result) string {
	if !v.Exists() {
		return "missing"
	}
	if len(v.Raw) > 40 {
		return v.Raw[:40] + "…"
	}
	return v.Raw
}

func (p *processor) refuse(msg *service.Message, err error) {
	msg.MetaSetMut(MetaError, reasonInvalidIP)
	msg.SetError(fmt.Errorf("%s: %w", reasonInvalidIP, err))
	p.metrics.invalidIP()
}

// write puts the enrichment into the event at target and sets metadata.
// The row's JSON is encoded once per cached row; the member written is that
// JSON with the event's attacker_uuid first (and, with raw answers, the
// record carrying it last), built in a pooled buffer: the message keeps
// only the event with its member and the envelope, each copied at its size
// (a storm's lookups hold thousands of rows until both outputs have them).
func (p *processor) write(msg *service.Message, a enrich.Answer, carrier enrich.Carrier) error {
	raw, err := msg.AsBytes()
	if err != nil {
		return err
	}
	variant, encode := 0, encodeEnrichment
	if p.includeRaw {
		variant, encode = 1, encodeRow
	}
	enc, err := a.JSON(variant, encode)
	if err != nil {
		return err
	}
	var uuid string
	if u := gjson.GetBytes(raw, "payload.attacker_uuid"); u.Type == gjson.String {
		uuid = u.Str
	}
	var carried *enrich.Carrier
	if p.includeRaw {
		carried = &carrier
	}
	buf := scratchPool.Get().(*[]byte)
	defer putScratch(buf)
	*buf = appendMember((*buf)[:0], enc, uuid, carried)
	member := *buf
	out, ok := p.splice(raw, member)
	if !ok {
		if out, err = sjson.SetRawBytes(raw, p.target, member); err != nil {
			return fmt.Errorf("writing %s: %w", p.target, err)
		}
	}
	msg.SetBytes(out)
	if p.envelopeMeta != "" {
		msg.MetaSetMut(p.envelopeMeta, envelope(member, time.Now()))
	}
	msg.MetaSetMut(MetaVerdict, a.Verdict())
	msg.MetaSetMut(MetaCache, string(a.Outcome))
	return nil
}

// appendMember appends the row's JSON object enc to dst with uuid (the
// event's attacker_uuid, when it has one) as its first member and, when c
// is set, the record that carries the row as its last three (so a warm
// start recognises that record if it is delivered again). enc is the
// cached encoding, shared by every hit: it is read, never written.
func appendMember(dst, enc []byte, uuid string, c *enrich.Carrier) []byte {
	if len(enc) < 2 || enc[0] != '{' || enc[len(enc)-1] != '}' {
		return append(dst, enc...)
	}
	dst = append(dst, '{')
	open := len(dst)
	next := func() { // a member follows: a comma unless it is the first
		if len(dst) > open {
			dst = append(dst, ',')
		}
	}
	if uuid != "" {
		dst = append(dst, `"attacker_uuid":`...)
		dst = strconv.AppendQuote(dst, uuid)
	}
	if inner := bytes.TrimSpace(enc[1 : len(enc)-1]); len(inner) > 0 {
		next()
		dst = append(dst, inner...)
	}
	if c != nil {
		next()
		dst = append(dst, `"carrier_topic":`...)
		dst = strconv.AppendQuote(dst, c.Topic)
		dst = append(dst, `,"carrier_partition":`...)
		dst = strconv.AppendInt(dst, int64(c.Partition), 10)
		dst = append(dst, `,"carrier_offset":`...)
		dst = strconv.AppendInt(dst, c.Offset, 10)
	}
	return append(dst, '}')
}

// splice appends the target as the event's last member when the target is a
// top-level key the event cannot already have (its name appears nowhere in
// the event): one copy instead of sjson's parse and rebuild.
func (p *processor) splice(raw, enc []byte) ([]byte, bool) {
	if p.quotedTarget == nil || bytes.Contains(raw, p.quotedTarget) {
		return nil, false
	}
	end := bytes.LastIndexByte(raw, '}')
	if end < 0 {
		return nil, false
	}
	body := bytes.TrimRight(raw[:end], " \t\r\n")
	out := make([]byte, 0, len(raw)+len(p.quotedTarget)+len(enc)+2)
	out = append(out, body...)
	if len(body) > 0 && body[len(body)-1] != '{' {
		out = append(out, ',')
	}
	out = append(out, p.quotedTarget...)
	out = append(out, ':')
	out = append(out, enc...)
	return append(out, '}'), true
}

func encodeEnrichment(r *aggregate.Row) ([]byte, error) { return json.Marshal(r.Enrichment()) }

// encodeRow calls the row's MarshalJSON itself: through json.Marshal its
// output (compact already) was scanned and compacted once more.
func encodeRow(r *aggregate.Row) ([]byte, error) { return r.Table().MarshalJSON() }

// carrierOf identifies the record an event came from, so a redelivery of
// the event that carried a change carries it again; none when the event
// does not say (it was not read from Kafka, or its metadata was removed).
func carrierOf(msg *service.Message) enrich.Carrier {
	r, _ := recordmeta.Of(msg)
	return enrich.Carrier(r)
}

func toFloat(v any) float64 {
	switch n := v.(type) {
	case int64:
		return float64(n)
	case float64:
		return n
	case int:
		return float64(n)
	case json.Number:
		f, _ := n.Float64()
		return f
	case string:
		f, _ := strconv.ParseFloat(n, 64)
		return f
	}
	return 0
}

// Close lets lookups already paid for fill the cache, then stops the feed
// refreshers.
func (p *processor) Close(ctx context.Context) error {
	err := p.engine.Settle(ctx)
	p.metrics.close() // after the last answers are in
	for _, f := range p.feeds {
		f.Stop()
	}
	if p.geo != nil {
		p.geo.Stop()
	}
	if p.store != nil {
		_ = p.store.Close()
	}
	if p.ledger != nil {
		_ = p.ledger.Close()
	}
	if p.budgets != nil {
		p.budgets.Flush()
	}
	return err
}
