// Package decnet_webhook adds the decnet_webhook input: an HTTP endpoint
// that DECNET's webhook worker posts events to, its signature checked,
// answering 2xx only once the outputs have the event.
package decnet_webhook

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/golang-lru/v2/expirable"
	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/tidwall/gjson"

	"github.com/decnet/decnet-stream/internal/topics"
)

const (
	fAddress      = "address"
	fPath         = "path"
	fSecret       = "secret"
	fMaxAge       = "max_age"
	fReplayWindow = "replay_window"
	fMaxInFlight  = "max_in_flight"
	fTimeout      = "timeout"

	// MetaSubject is the event's subject, for topic_router.
	MetaSubject = "decnet_subject"

	maxBodyBytes = 1 << 20
)

func spec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Network").
		Summary("Receives the events DECNET's webhook worker posts, checks their signature, and answers 2xx only once the outputs have them.").
		Description(`
DECNET's one outbound path is its webhook worker: it POSTs each event matching a subscription as the v1
envelope (keys sorted, `+"`ts`"+` an ISO-8601 string) with `+"`X-DECNET-Signature: sha256=<hex HMAC-SHA256 of the body>`"+`,
keyed by the subscription's secret, and retries on network errors, 5xx and 429 (any other 4xx is final).

Each request is answered:

| status | when |
|---|---|
| 200 | the outputs have the event (or it was already forwarded within `+"`replay_window`"+`) |
| 401 | the signature is missing or wrong (compared in constant time over the exact body), or the body's `+"`ts`"+` is further than `+"`max_age`"+` from now: nothing is forwarded |
| 400 | the body is not an event (no `+"`id`"+`, `+"`topic`"+` or `+"`ts`"+`) |
| 413 | the body is over 1 MiB |
| 429 | `+"`max_in_flight`"+` events are waiting for their outputs: DECNET retries |
| 503 | the outputs refused the event, or did not take it within `+"`timeout`"+`, or the same event id is in flight: DECNET retries |

The signature covers the body only, not the `+"`X-DECNET-Timestamp`"+` header: freshness and replay are judged
by the signed body's `+"`ts`"+` and `+"`id`"+`, so a replayed or retried event is forwarded once within
`+"`replay_window`"+`. The event's `+"`topic`"+` becomes its `+"`decnet_subject`"+` metadata, for `+"`topic_router`"+`; the
body goes on unchanged.`).
		Fields(
			service.NewStringField(fAddress).Description("Where to listen.").Default("0.0.0.0:8087").Example("127.0.0.1:8087"),
			service.NewStringField(fPath).Description("The path DECNET's subscription posts to.").Default("/decnet/webhook"),
			service.NewStringField(fSecret).Description("The subscription's secret. Set it from the environment; the input refuses to start without one.").Secret().
				Example("${DECNET_WEBHOOK_SECRET}"),
			service.NewDurationField(fMaxAge).Description("How far an event's `ts` may be from now.").Default("10m"),
			service.NewDurationField(fReplayWindow).Description("How long a forwarded event id is remembered, so that DECNET's retries and replays are forwarded once.").Default("1h"),
			service.NewIntField(fMaxInFlight).Description("Events waiting for their outputs before new ones get 429.").Default(1000),
			service.NewDurationField(fTimeout).Description("How long a request waits for its event's outputs before 503.").Default("20s"),
		)
}

func init() {
	err := service.RegisterBatchInput("decnet_webhook", spec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchInput, error) {
			return newInput(conf, mgr)
		})
	if err != nil {
		panic(err)
	}
}

// delivery is one accepted event on its way to the pipeline.
type delivery struct {
	id   string
	msg  *service.Message
	done chan error
}

type input struct {
	address, path string
	secret        []byte
	maxAge        time.Duration
	timeout       time.Duration
	now           func() time.Time
	log           *service.Logger
	refused       *service.MetricCounter

	queue chan delivery
	seen  *expirable.LRU[string, struct{}] // ids forwarded within the window

	mu       sync.Mutex
	inFlight map[string]bool
	srv      *http.Server
	ln       net.Listener
}

func newInput(conf *service.ParsedConfig, mgr *service.Resources) (*input, error) {
	in := &input{log: mgr.Logger(), now: time.Now, inFlight: map[string]bool{},
		refused: mgr.Metrics().NewCounter("decnet_webhook_refused", "status")}
	var err error
	if in.address, err = conf.FieldString(fAddress); err != nil {
		return nil, err
	}
	if in.path, err = conf.FieldString(fPath); err != nil {
		return nil, err
	}
	secret, err := conf.FieldString(fSecret)
	if err != nil {
		return nil, err
	}
	if secret == "" {
		return nil, errors.New("secret: must be set: unsigned events are refused")
	}
	in.secret = []byte(secret)
	if in.maxAge, err = conf.FieldDuration(fMaxAge); err != nil {
		return nil, err
	}
	window, err := conf.FieldDuration(fReplayWindow)
	if err != nil {
		return nil, err
	}
	in.seen = expirable.NewLRU[string, struct{}](1_000_000, nil, window)
	n, err := conf.FieldInt(fMaxInFlight)
	if err != nil {
		return nil, err
	}
	in.queue = make(chan delivery, max(n, 1))
	if in.timeout, err = conf.FieldDuration(fTimeout); err != nil {
		return nil, err
	}
	return in, nil
}

func (in *input) Connect(context.Context) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.srv != nil {
		return nil
	}
	ln, err := net.Listen("tcp", in.address)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", in.address, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+in.path, in.handle)
	in.srv, in.ln = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, ln
	go func() { _ = in.srv.Serve(ln) }()
	in.log.Infof("decnet_webhook: listening for DECNET's webhook worker on http://%s%s", ln.Addr(), in.path)
	return nil
}

// Addr is where the input listens (tests listen on port 0).
func (in *input) Addr() string {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.ln == nil {
		return ""
	}
	return in.ln.Addr().String()
}

func (in *input) refuse(w http.ResponseWriter, status int, why string) {
	in.refused.Incr(1, fmt.Sprint(status))
	if status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, why, status)
}

func (in *input) handle(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBodyBytes))
	if err != nil {
		in.refuse(w, http.StatusRequestEntityTooLarge, "body over 1 MiB")
		return
	}
	if !in.signed(r.Header.Get("X-DECNET-Signature"), body) {
		in.refuse(w, http.StatusUnauthorized, "bad signature")
		return
	}
	id, topic, ts := gjson.GetBytes(body, "id"), gjson.GetBytes(body, "topic"), gjson.GetBytes(body, "ts")
	if id.Type != gjson.String || id.Str == "" || topic.Type != gjson.String || topic.Str == "" || !ts.Exists() {
		in.refuse(w, http.StatusBadRequest, "not a DECNET event: id, topic and ts are required")
		return
	}
	at, ok := topics.EventTime(ts)
	if !ok {
		in.refuse(w, http.StatusBadRequest, "ts is neither epoch seconds nor an ISO-8601 time")
		return
	}
	if age := in.now().Sub(at); age > in.maxAge || age < -in.maxAge {
		in.refuse(w, http.StatusUnauthorized, fmt.Sprintf("ts is %s from now: stale or replayed", age.Round(time.Second)))
		return
	}
	if _, dup := in.seen.Get(id.Str); dup {
		w.WriteHeader(http.StatusOK) // forwarded already: a retry or a replay
		return
	}
	in.mu.Lock()
	if in.inFlight[id.Str] {
		in.mu.Unlock()
		in.refuse(w, http.StatusServiceUnavailable, "this event is on its way: retry")
		return
	}
	// The id stays in flight until the outputs answer, even past this
	// request's timeout: a retry meanwhile is told to come back (503), and
	// one after a delivery is answered 200 (settle), so an event is
	// forwarded once.
	in.inFlight[id.Str] = true
	in.mu.Unlock()

	msg := service.NewMessage(body)
	msg.MetaSetMut(MetaSubject, topic.Str)
	d := delivery{id: id.Str, msg: msg, done: make(chan error, 1)}
	select {
	case in.queue <- d:
	default:
		in.settle(d.id, errors.New("not queued"))
		in.refuse(w, http.StatusTooManyRequests, "too many events waiting for their outputs")
		return
	}
	timer := time.NewTimer(in.timeout)
	defer timer.Stop()
	select {
	case err := <-d.done:
		if err != nil {
			in.refuse(w, http.StatusServiceUnavailable, "not delivered: "+err.Error())
			return
		}
		w.WriteHeader(http.StatusOK)
	case <-timer.C:
		in.refuse(w, http.StatusServiceUnavailable, "the outputs did not take the event in time")
	case <-r.Context().Done():
	}
}

// settle ends an event's time in flight: delivered, its id is remembered
// for the replay window.
func (in *input) settle(id string, err error) {
	if err == nil {
		in.seen.Add(id, struct{}{})
	}
	in.mu.Lock()
	delete(in.inFlight, id)
	in.mu.Unlock()
}

// signed checks "sha256=<hex>" against the HMAC-SHA256 of the exact body,
// in constant time.
func (in *input) signed(header string, body []byte) bool {
	sig, ok := strings.CutPrefix(header, "sha256=")
	if !ok {
		return false
	}
	got, err := hex.DecodeString(sig)
	if err != nil {
		return false
	}
	mac := hmac.New(sha256.New, in.secret)
	mac.Write(body)
	return hmac.Equal(got, mac.Sum(nil))
}

func (in *input) ReadBatch(ctx context.Context) (service.MessageBatch, service.AckFunc, error) {
	select {
	case d := <-in.queue:
		return service.MessageBatch{d.msg}, func(_ context.Context, err error) error {
			in.settle(d.id, err)
			d.done <- err
			return nil
		}, nil
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

func (in *input) Close(ctx context.Context) error {
	in.mu.Lock()
	srv := in.srv
	in.srv = nil
	in.mu.Unlock()
	if srv != nil {
		return srv.Shutdown(ctx)
	}
	return nil
}
