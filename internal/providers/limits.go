package providers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Limits keep one provider inside its free tier. Zero values mean: no cap.
type Limits struct {
	MaxConcurrent int           // requests in flight at once
	RatePerSecond float64       // token-bucket rate
	Burst         int           // token-bucket burst (default 1)
	DailyBudget   int           // requests per provider day
	Timeout       time.Duration // per request, default 10s
	MaxBodyBytes  int64         // response size cap, default 1 MiB
	Retries       int           // extra attempts after a network error or 5xx
	// MaxQueueWait, when set, is the longest a request waits for a
	// rate-limit token (else up to the caller's max_wait); past it the
	// lookup answers rate_limited at once and is asked again after
	// negative_ttl. A trade measured in the cold-start storm benchmark:
	// 100ms let repeat sightings through a little faster (0.16 of the
	// no-storm rate instead of 0.02–0.14) but used a third of the allowed
	// provider rate instead of 96–98%, so it is off by default.
	MaxQueueWait time.Duration
}

// Ledger shares daily budgets among the replicas of one consumer group: a
// budget belongs to an API key, and N replicas counting alone would spend N
// times the free tier.
type Ledger interface {
	// Sync records that replica has used `used` of provider's budget on day
	// and returns what the other replicas used that day and the replicas
	// active lately (sorted, replica included).
	Sync(ctx context.Context, provider, day, replica string, used int) (others int, active []string, err error)
}

// Shared is how a gate shares its daily budget.
type Shared struct {
	Ledger  Ledger
	Replica string // this replica's stable name
	// OnError is told when the ledger cannot be reached (spending then
	// stays within the last share known).
	OnError func(error)
}

// gate enforces Limits for one provider. It never makes a caller wait past
// its deadline: when no token or budget can be had in time it answers at
// once, and the lookup is recorded as rate_limited or quota_exhausted.
type gate struct {
	name   string
	limits Limits
	now    func() time.Time
	sem    chan struct{}
	bucket *rate.Limiter
	store  *BudgetStore
	// sends meters actual sends (see acquire): a bucket of the same rate
	// and burst, drawn on one request at a time (pace) as it leaves.
	pace  sync.Mutex
	sends *rate.Limiter
	// throttledAt is when the provider last answered 429 (unix ns, 0:
	// never): sends are metered to half the burst for a minute after it
	// (see throttled).
	throttledAt atomic.Int64

	shared *Shared

	mu  sync.Mutex
	day string // provider day the budget counts
	// dayFrom and dayUntil bound day once rollLocked has seen it (zero
	// before).
	dayFrom, dayUntil time.Time
	used              int
	// allowance caps used until the next sync with a shared ledger: this
	// replica's share of what the replicas together have left.
	allowance    int
	syncedAt     time.Time
	remaining    int       // the provider's own count, -1 when unknown
	blockedUntil time.Time // Retry-After, daily reset, or auth failure
	blockKind    ErrorKind
}

func newGate(name string, l Limits, store *BudgetStore, shared *Shared, now func() time.Time) *gate {
	if now == nil {
		now = time.Now
	}
	g := &gate{name: name, limits: l, now: now, store: store, remaining: -1}
	if shared != nil && shared.Ledger != nil && l.DailyBudget > 0 {
		g.shared = shared
	}
	if l.MaxConcurrent > 0 {
		g.sem = make(chan struct{}, l.MaxConcurrent)
	}
	if l.RatePerSecond > 0 {
		g.bucket = rate.NewLimiter(rate.Limit(l.RatePerSecond), g.burst())
		g.sends = rate.NewLimiter(rate.Limit(l.RatePerSecond), g.burst())
	}
	if store != nil {
		st, known := store.load(name)
		g.day, g.used, g.blockedUntil, g.blockKind = st.Day, st.Used, st.BlockedUntil, st.BlockKind
		if !known {
			// The file could not be read: what was spent today is unknown,
			// so today counts as spent (fail safe), not as a fresh budget.
			g.day, g.used = providerDay(now()), l.DailyBudget
		}
	}
	return g
}

// rollLocked starts a new provider day's count when the UTC date changed.
// Call with mu held.
func (g *gate) rollLocked(now time.Time) {
	// The date is formatted only when now may be outside g.day: formatting
	// it on every request was 2% of a storm's lookups (one per provider and
	// new attacker).
	if !now.Before(g.dayFrom) && now.Before(g.dayUntil) {
		return
	}
	if day := providerDay(now); day != g.day {
		g.day, g.used, g.remaining, g.allowance, g.syncedAt = day, 0, -1, 0, time.Time{}
	}
	g.dayUntil = nextUTCMidnight(now)
	g.dayFrom = g.dayUntil.AddDate(0, 0, -1)
}

// syncMinGap keeps a replica whose share is spent from asking the ledger
// on every refused lookup.
const syncMinGap = 100 * time.Millisecond

// syncLocked reserves this replica's next call in the shared ledger and
// reports whether it may make it. The reservation (used+1) is written
// before the group's counts are read, so of two replicas racing for the
// last call at least one sees the other's reservation: together they never
// spend more than the budget. The call is also held to this replica's share
// of what the group has left (the remainder split among the replicas
// active lately, the first ones by name taking the odd calls), so one
// replica cannot starve the others. A refused reservation is withdrawn at
// once; a ledger out of reach stalls spending rather than risk
// overspending. Call with mu held.
func (g *gate) syncLocked(ctx context.Context, now time.Time) bool {
	if g.used >= g.allowance && now.Sub(g.syncedAt) < syncMinGap {
		return false
	}
	g.syncedAt = now
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	others, active, err := g.shared.Ledger.Sync(sctx, g.name, g.day, g.shared.Replica, g.used+1)
	if err != nil {
		if g.shared.OnError != nil {
			g.shared.OnError(fmt.Errorf("sharing %s's daily budget: %w", g.name, err))
		}
		g.allowance = g.used
		return false
	}
	left := g.limits.DailyBudget - g.used - others
	n := max(len(active), 1)
	share := left / n
	if i := slices.Index(active, g.shared.Replica); i >= 0 && i < left%n {
		share++
	}
	g.allowance = g.used + max(share, 0)
	if g.used < g.allowance {
		return true
	}
	// Withdraw the reservation so the others do not see a call that was
	// never made.
	if _, _, err := g.shared.Ledger.Sync(sctx, g.name, g.day, g.shared.Replica, g.used); err != nil && g.shared.OnError != nil {
		g.shared.OnError(fmt.Errorf("sharing %s's daily budget: %w", g.name, err))
	}
	return false
}

// providerDay is the UTC date: free tiers reset at UTC midnight.
func providerDay(t time.Time) string { return t.UTC().Format("2006-01-02") }

func nextUTCMidnight(t time.Time) time.Time {
	y, m, d := t.UTC().Date()
	return time.Date(y, m, d+1, 0, 0, 0, 0, time.UTC)
}

type acquireDeadlineKey struct{}

// WithAcquireDeadline bounds how long a lookup under ctx may wait for a
// provider's token or concurrency slot, separately from ctx's own deadline:
// a background lookup may run long once started, but must not queue behind
// the rate limit past what its caller would wait. Past it the lookup answers
// rate_limited at once.
func WithAcquireDeadline(ctx context.Context, t time.Time) context.Context {
	return context.WithValue(ctx, acquireDeadlineKey{}, t)
}

func acquireDeadline(ctx context.Context) (time.Time, bool) {
	if t, ok := ctx.Value(acquireDeadlineKey{}).(time.Time); ok {
		return t, true
	}
	return ctx.Deadline()
}

// acquire reserves one request. On success release must be called once the
// request is done.
func (g *gate) acquire(ctx context.Context) (release func(), kind ErrorKind, why string) {
	now := g.now()
	g.mu.Lock()
	g.rollLocked(now)
	if now.Before(g.blockedUntil) {
		k, until := g.blockKind, g.blockedUntil
		g.mu.Unlock()
		if k == ErrNone {
			k = ErrRateLimited
		}
		return nil, k, "blocked until " + until.UTC().Format(time.RFC3339)
	}
	if (g.limits.DailyBudget > 0 && g.used >= g.limits.DailyBudget) || g.remaining == 0 {
		g.mu.Unlock()
		return nil, ErrQuotaExhausted, "daily budget used up"
	}
	if g.shared != nil {
		// Every call is paid for against the group's count: budgeted
		// providers are free tiers, a call a second at most, and a ledger
		// round trip per call is what keeps two replicas from spending the
		// same last calls.
		if !g.syncLocked(ctx, now) {
			g.mu.Unlock()
			return nil, ErrQuotaExhausted, "this replica's share of the daily budget (shared by its group) is used up"
		}
	}
	g.used++ // counted now so concurrent callers cannot overspend
	g.mu.Unlock()
	refund := func() {
		g.mu.Lock()
		g.used--
		g.mu.Unlock()
	}

	if g.bucket != nil {
		dl, ok := acquireDeadline(ctx)
		if q := g.limits.MaxQueueWait; q > 0 && (!ok || now.Add(q).Before(dl)) {
			dl, ok = now.Add(q), true
		}
		r := g.bucket.ReserveN(now, 1)
		delay := r.DelayFrom(now)
		if !r.OK() || (ok && now.Add(delay).After(dl)) {
			r.CancelAt(now)
			refund()
			return nil, ErrRateLimited, "rate limit: no token before the deadline"
		}
		if delay > 0 {
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				r.Cancel()
				refund()
				return nil, ErrRateLimited, "rate limit: deadline while waiting for a token"
			}
		}
	}
	if g.sem != nil {
		var deadline <-chan time.Time // nil: wait as long as ctx lets us
		if dl, ok := acquireDeadline(ctx); ok {
			t := time.NewTimer(time.Until(dl))
			defer t.Stop()
			deadline = t.C
		}
		select {
		case g.sem <- struct{}{}:
		case <-deadline:
			refund()
			return nil, ErrRateLimited, "concurrency limit: no slot before the deadline"
		case <-ctx.Done():
			refund()
			return nil, ErrRateLimited, "concurrency limit: deadline while waiting for a slot"
		}
	}
	// Metered sends: the token bucket above decides when a request may
	// go, but its timers fire late when the process is descheduled, and
	// together: requests it had spread over a second left in one burst,
	// which a provider metering its own rate refuses with 429s and a
	// Retry-After that holds every request back for a second (the storm
	// benchmark: 118-185 answers 429 per storm). So each send also draws on
	// a bucket of the same rate and burst, judged serially when it
	// actually leaves: never more than the burst back to back.
	if g.sends != nil {
		if !g.meter(ctx) {
			if g.sem != nil {
				<-g.sem
			}
			refund()
			return nil, ErrRateLimited, "rate limit: no send slot before the deadline"
		}
	}
	// A block may have come while this request waited for its token or
	// slot (another request was answered 429): honour it now, or the
	// request goes out during the Retry-After and earns another block.
	if (g.bucket != nil || g.sem != nil) && g.blockedAt(g.now()) {
		if g.sem != nil {
			<-g.sem
		}
		refund()
		return nil, ErrRateLimited, "blocked while waiting for a token (Retry-After)"
	}
	if g.limits.DailyBudget > 0 {
		g.persist(false) // without a budget there is no count worth keeping
	}
	return func() {
		if g.sem != nil {
			<-g.sem
		}
	}, ErrNone, ""
}

// throttleCalm is how long sends stay metered to half the burst after a
// 429.
const throttleCalm = time.Minute

// throttled meters sends to half the burst after the provider answered
// 429: inside our own rate, that means it meters a smaller burst than ours,
// or our spaced sends reached it bunched (a stalled network or process
// delivers a second's sends together; the storm benchmark's 429s came so),
// and each 429's Retry-After holds every request back. Half, not one: a
// process descheduled with a burst of 1 cannot bank what a stall costs it
// (the storm benchmark used 36% of the allowed rate so). The burst comes
// back once a minute passes without a 429 (see meter).
func (g *gate) throttled() {
	if g.sends == nil {
		return
	}
	g.throttledAt.Store(g.now().UnixNano())
	half := (g.burst() + 1) / 2
	now := time.Now()
	g.sends.SetBurstAt(now, half)
	// Tokens saved at the old burst would still leave together: spend them.
	if extra := int(g.sends.TokensAt(now)) - half; extra > 0 {
		g.sends.ReserveN(now, extra)
	}
}

// burst is the configured burst.
func (g *gate) burst() int { return max(g.limits.Burst, 1) }

// meter waits until a send fits the rate and burst as actually sent,
// reporting false when that is past the request's deadline. Requests are
// metered one at a time, so each is reserved at the moment it really
// leaves, not when a timer meant it to.
func (g *gate) meter(ctx context.Context) bool {
	g.pace.Lock()
	defer g.pace.Unlock()
	now := time.Now()
	if g.sends.Burst() < g.burst() && g.now().UnixNano()-g.throttledAt.Load() >= int64(throttleCalm) {
		g.sends.SetBurstAt(now, g.burst())
	}
	r := g.sends.ReserveN(now, 1)
	wait := r.DelayFrom(now)
	if wait == 0 {
		return true
	}
	if dl, ok := acquireDeadline(ctx); ok && now.Add(wait).After(dl) {
		r.CancelAt(now)
		return false
	}
	time.Sleep(wait)
	return true
}

// blockedAt reports whether requests are held back at now.
func (g *gate) blockedAt(now time.Time) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return now.Before(g.blockedUntil)
}

// block stops all requests until until (Retry-After, the daily reset, an
// auth failure's back-off).
func (g *gate) block(until time.Time, kind ErrorKind) {
	g.mu.Lock()
	if until.After(g.blockedUntil) {
		g.blockedUntil, g.blockKind = until, kind
	}
	g.mu.Unlock()
	g.persist(true)
}

// observeRemaining records the provider's own count of what is left today.
func (g *gate) observeRemaining(n int) {
	g.mu.Lock()
	g.remaining = n
	g.mu.Unlock()
}

// Remaining is what is left of today's budget, or -1 when unlimited.
func (g *gate) Remaining() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rollLocked(g.now())
	return g.remainingLocked()
}

func (g *gate) remainingLocked() int {
	left := -1
	if g.limits.DailyBudget > 0 {
		left = max(g.limits.DailyBudget-g.used, 0)
	}
	if g.remaining >= 0 && (left < 0 || g.remaining < left) {
		left = g.remaining
	}
	return left
}

// Quota is a provider's standing against its limits, for metrics and for
// people (dev's summary: "daily budget 100/100 spent, next at 00:00 UTC").
type Quota struct {
	Day          string // the provider day counted (UTC date)
	Used         int    // requests sent today
	Budget       int    // the daily budget, 0 when unlimited
	Remaining    int    // what is left today, -1 when unlimited
	BlockedUntil time.Time
	BlockKind    ErrorKind // why blocked: rate_limited, quota_exhausted, auth
	KeyID        string    // which API key the budget belongs to (KeyID)
}

// Quoted is a provider with a Quota to report (the HTTP providers).
type Quoted interface{ Quota() Quota }

// Blocked reports whether requests are held back at now.
func (q Quota) Blocked(now time.Time) bool { return now.Before(q.BlockedUntil) }

// NextDay is when the daily budget is whole again.
func (q Quota) NextDay(now time.Time) time.Time { return nextUTCMidnight(now) }

func (g *gate) quota() Quota {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.rollLocked(g.now())
	return Quota{Day: g.day, Used: g.used, Budget: g.limits.DailyBudget, Remaining: g.remainingLocked(),
		BlockedUntil: g.blockedUntil, BlockKind: g.blockKind}
}

// persist hands the gate's state to the store; now writes it at once (a
// block must survive any crash), otherwise within saveEvery.
func (g *gate) persist(now bool) {
	if g.store == nil {
		return
	}
	g.mu.Lock()
	st := budgetState{Day: g.day, Used: g.used, BlockedUntil: g.blockedUntil, BlockKind: g.blockKind}
	g.mu.Unlock()
	g.store.save(g.name, st, now)
}

// BudgetStore keeps each provider's daily count and blocks in a small JSON
// file, so a restart does not hand a provider a fresh budget mid-day.
type BudgetStore struct {
	path string

	mu      sync.Mutex
	all     map[string]budgetState
	spent   bool   // the file was unreadable: today counts as spent
	warning string // said once by whoever opened the store
	dirty   bool
	written time.Time   // last write
	timer   *time.Timer // a write scheduled within saveEvery
}

// saveEvery bounds how often the state file is written. Writing it on every
// request (as it once did) cost 40% of the pipeline's CPU at 10k lookups/s;
// a crash now forgets at most saveEvery of counting, a request or two at the
// free tiers' rates, and the providers' own 429s still stop an overspend.
const saveEvery = time.Second

type budgetState struct {
	Day          string    `json:"day"`
	Used         int       `json:"used"`
	BlockedUntil time.Time `json:"blocked_until,omitzero"`
	BlockKind    ErrorKind `json:"block_kind,omitempty"`
}

// OpenBudgetStore reads (or starts) the state file at path. A file that
// exists but cannot be read or decoded does not stop enrichment, but it
// does not hand out a fresh budget either: it is moved aside
// (path.corrupt-<unix time>), every provider's budget counts as spent until
// the next UTC day, and Warning says so.
func OpenBudgetStore(path string) (*BudgetStore, error) {
	s := &BudgetStore{path: path, all: map[string]budgetState{}}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err == nil && json.Unmarshal(b, &s.all) == nil:
	default:
		if err == nil {
			err = errors.New("not the JSON this store writes")
		}
		s.all, s.spent = map[string]budgetState{}, true
		aside := fmt.Sprintf("%s.corrupt-%d", path, time.Now().Unix())
		if rerr := os.Rename(path, aside); rerr != nil {
			aside = path + " (could not be moved aside: " + rerr.Error() + ")"
		}
		s.warning = fmt.Sprintf("budget state file %s is unreadable (%v): every daily budget counts as spent until the next UTC day; the file was kept as %s", path, err, aside)
	}
	return s, nil
}

// Warning is what the operator must hear about the state file, or "".
func (s *BudgetStore) Warning() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.warning
}

// load is a provider's saved state; known is false when the file was
// unreadable and nothing is known of today's spending.
func (s *BudgetStore) load(name string) (st budgetState, known bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.all[name]
	return st, ok || !s.spent
}

// save records a provider's state, writing the file now when asked to or
// when saveEvery has passed since the last write, else within saveEvery.
func (s *BudgetStore) save(name string, st budgetState, now bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.all[name] = st
	s.dirty = true
	since := time.Since(s.written)
	switch {
	case now || since >= saveEvery:
		s.writeLocked()
	case s.timer == nil:
		s.timer = time.AfterFunc(saveEvery-since, s.Flush)
	}
}

// Flush writes any state not yet written: on a clean stop, and when a
// scheduled write falls due.
func (s *BudgetStore) Flush() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dirty {
		s.writeLocked()
	}
}

func (s *BudgetStore) writeLocked() {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.dirty, s.written = false, time.Now()
	b, err := json.Marshal(s.all)
	if err != nil {
		return
	}
	_ = writeFileAtomic(s.path, b)
}

// writeFileAtomic replaces path with b: a temporary file of its own in the
// same folder, synced, renamed over path, and the folder synced, so a crash
// leaves the old file or the new one, never a torn one.
func writeFileAtomic(path string, b []byte) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
