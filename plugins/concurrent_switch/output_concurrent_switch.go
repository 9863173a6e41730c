// Package concurrent_switch adds the concurrent_switch output: Benthos'
// switch, except that a slow case holds only its own batches.
//
// Benthos' switch output (and the fan_out broker) hand each batch to their
// child outputs from one loop, one send at a time: while one child is busy
// (a ClickHouse insert of ten thousand rows, say) the loop waits on it, every
// batch behind it waits too, and so do the pipeline threads that want to
// hand theirs over. In pipeline.yaml that made repeat sightings, whose only
// output is a lookup request to Kafka, wait on the rows of new attackers
// being written: the storm benchmark's hit path ran at a fifth of its rate.
package concurrent_switch

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/redpanda-data/benthos/v4/public/bloblang"
	"github.com/redpanda-data/benthos/v4/public/service"
)

const (
	fCases       = "cases"
	fCheck       = "check"
	fOutput      = "output"
	fMaxInFlight = "max_in_flight"
)

func spec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Utility").
		Summary("Routes each message to the first case whose check it passes, like `switch`, but writes to the cases independently: a slow case never holds another case's batches.").
		Description(`
Benthos' `+"`switch`"+` output hands every batch to its cases from a single loop: while one case's output
is busy (a large database insert, a broker applying backpressure), batches for every other case wait
behind it, and so does the pipeline. This output takes up to `+"`max_in_flight`"+` batches at once and
writes each batch's share for every case concurrently, so each case's output applies backpressure only
to the batches that need it.

A batch is acknowledged once every case it was routed to has acknowledged its share. When a case's
output fails, only the messages routed to that case are reported failed (with the output's own
per-message errors where it gives them), so the input delivers only those again.

The cases are checked in order and a message goes to the first one it passes (there is no
`+"`continue`"+`); a case without a check takes every message that reaches it. A message no case takes is
dropped and acknowledged, as `+"`switch`"+` does without `+"`strict_mode`"+`. A check that fails to run counts
as false and is logged.

Order: batches are written in parallel, so two batches of one case may reach its output in either
order. Where order matters, keep it at the input (one batch per partition out at a time, as
`+"`kafka_franz`"+`'s `+"`ordered_topics`"+` does): the next batch is not read before this one is acknowledged.`).
		Fields(
			service.NewObjectListField(fCases,
				service.NewBloblangField(fCheck).
					Description("A Bloblang query that should return a boolean: whether a message goes to this case. Empty: every message. `errored()` and `@name.or(\"…\") == \"…\"` (or `!=`, literals without escapes) are answered from the message itself, with Bloblang's result and without its per-message mapping, unless the metadata value is not a string.").
					Default("").
					Examples(`errored()`, `@intel_lookup.or("") == "request"`),
				service.NewOutputField(fOutput).Description("The output of this case."),
			).Description("The cases, checked in order."),
			service.NewIntField(fMaxInFlight).
				Description("How many batches may be routed and written at once.").
				Default(64).
				LintRule(`root = if this < 1 { [ "max_in_flight must be at least 1" ] }`),
		).
		LintRule(`root = if this.cases.or([]).length() == 0 { [ "cases must name at least one case" ] }`).
		Example("Lookup requests never wait on rows", "", `
output:
  concurrent_switch:
    cases:
      - check: errored()
        output:
          kafka_franz:
            seed_brokers: [ localhost:9092 ]
            topic: decnet.dlq
      - check: '@intel_lookup.or("") == "request"'
        output:
          kafka_franz:
            seed_brokers: [ localhost:9092 ]
            topic: attacker.intel.lookup
      - output:
          clickhouse:
            dsn: clickhouse://localhost:9000/default
            table: attacker_intel
`)
}

func init() {
	err := service.RegisterBatchOutput("concurrent_switch", spec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchOutput, service.BatchPolicy, int, error) {
			out, err := newOutput(conf, mgr.Logger())
			if err != nil {
				return nil, service.BatchPolicy{}, 0, err
			}
			mif, err := conf.FieldInt(fMaxInFlight)
			if err != nil {
				return nil, service.BatchPolicy{}, 0, err
			}
			return out, service.BatchPolicy{}, mif, nil
		})
	if err != nil {
		panic(err)
	}
}

// switchCase is one case: a check (nil takes everything) and its output.
type switchCase struct {
	check  *bloblang.Executor
	fast   *metaCheck // check, when it reads one metadata value
	out    *service.OwnedOutput
	primed bool // Connect started it
}

type output struct {
	cases []switchCase
	log   *service.Logger
}

func newOutput(conf *service.ParsedConfig, log *service.Logger) (*output, error) {
	objs, err := conf.FieldObjectList(fCases)
	if err != nil {
		return nil, err
	}
	if len(objs) == 0 {
		return nil, errors.New("cases must name at least one case")
	}
	o := &output{log: log}
	for i, c := range objs {
		var sc switchCase
		if s, _ := c.FieldString(fCheck); s != "" {
			if sc.check, err = c.FieldBloblang(fCheck); err != nil {
				return nil, fmt.Errorf("cases[%d].check: %w", i, err)
			}
			sc.fast = metaCheckOf(s)
		}
		if sc.out, err = c.FieldOutput(fOutput); err != nil {
			return nil, fmt.Errorf("cases[%d].output: %w", i, err)
		}
		o.cases = append(o.cases, sc)
	}
	return o, nil
}

// Connect starts every case's output, so the first batch finds them ready.
// A case is started once: when a later case fails to start, the retried
// Connect starts only the rest (an output consumes one channel for life).
func (o *output) Connect(context.Context) error {
	for i := range o.cases {
		c := &o.cases[i]
		if c.primed {
			continue
		}
		if err := c.out.Prime(); err != nil {
			return fmt.Errorf("cases[%d]: %w", i, err)
		}
		c.primed = true
	}
	return nil
}

// route returns, per case, the indexes of the messages it takes.
func (o *output) route(batch service.MessageBatch) [][]int {
	routes := make([][]int, len(o.cases))
	execs := make([]*service.MessageBatchBloblangExecutor, len(o.cases))
	for c, sc := range o.cases {
		if sc.check != nil {
			execs[c] = batch.BloblangExecutor(sc.check)
		}
	}
	for i := range batch {
		for c := range o.cases {
			if execs[c] == nil || o.passes(execs[c], batch[i], c, i) {
				routes[c] = append(routes[c], i)
				break
			}
		}
	}
	return routes
}

// passes runs case c's check on message i (msg); a check that fails to run, or
// returns anything but true, is false. A check that reads one metadata
// value is answered from the message when it can be.
func (o *output) passes(exec *service.MessageBatchBloblangExecutor, msg *service.Message, c, i int) bool {
	if fast := o.cases[c].fast; fast != nil {
		if pass, known := fast.test(msg); known {
			return pass
		}
	}
	res, err := exec.Query(i)
	if err == nil && res != nil {
		var v any
		if v, err = res.AsStructured(); err == nil {
			pass, _ := v.(bool)
			return pass
		}
	}
	if err != nil {
		o.log.Errorf("cases[%d].check failed, taken as false: %v", c, err)
	}
	return false
}

func (o *output) WriteBatch(ctx context.Context, batch service.MessageBatch) error {
	routes := o.route(batch)
	// The index maps a case output's per-message errors (on its own,
	// possibly reshaped, share) back to this batch.
	var index *service.Indexer
	errs := make([]error, len(o.cases))
	var wg sync.WaitGroup
	for c, idx := range routes {
		if len(idx) == 0 {
			continue
		}
		if index == nil {
			index = batch.Index()
		}
		share := make(service.MessageBatch, len(idx))
		for j, i := range idx {
			share[j] = batch[i].Copy()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[c] = o.cases[c].out.WriteBatch(ctx, share)
		}()
	}
	wg.Wait()
	return o.batchError(batch, index, routes, errs)
}

// batchError reports the messages whose case failed: those its output
// names when it names any, else all it was given.
func (o *output) batchError(batch service.MessageBatch, index *service.Indexer, routes [][]int, errs []error) error {
	var berr *service.BatchError
	for c, err := range errs {
		if err == nil {
			continue
		}
		if berr == nil {
			berr = service.NewBatchError(batch, err)
		}
		var caseErr *service.BatchError
		if errors.As(err, &caseErr) && caseErr.IndexedErrors() > 0 {
			caseErr.WalkMessagesIndexedBy(index, func(i int, _ *service.Message, e error) bool {
				if e != nil && i >= 0 && i < len(batch) {
					berr.Failed(i, e)
				}
				return true
			})
			continue
		}
		for _, i := range routes[c] {
			berr.Failed(i, err)
		}
	}
	if berr == nil {
		return nil
	}
	return berr
}

func (o *output) Close(ctx context.Context) error {
	var errs []error
	for _, c := range o.cases {
		errs = append(errs, c.out.Close(ctx))
	}
	return errors.Join(errs...)
}
