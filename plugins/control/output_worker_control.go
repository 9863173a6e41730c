// Package control adds the worker_control output: DECNET's
// system.<worker>.control commands for this process.
package control

import (
	"context"
	"os"
	"syscall"

	"github.com/redpanda-data/benthos/v4/public/service"
	"github.com/tidwall/gjson"
)

func spec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Beta().
		Categories("Utility").
		Summary("Acts on DECNET worker control commands: `stop` shuts this process down gracefully; any other action is logged and ignored.").
		Description(`
A command is a v1 envelope whose payload is ` + "`{\"action\":\"stop\",\"requested_by\":…,\"ts\":…}`" + ` (a bare payload works too).
On ` + "`stop`" + ` the command is acknowledged first (so a restart does not read it again) and then the process
receives SIGTERM: every stream stops reading, finishes and acknowledges its in-flight work within
` + "`shutdown_timeout`" + `, commits its offsets and exits. A stopped worker has no listener: starting it again
is the supervisor's job, so ` + "`start`" + ` (and any other action) is only logged.
`).
		Field(service.NewStringField("worker").Description("This worker's name, for the logs (DECNET registers the enrichment stage as " + "`enrich`" + ").").Default("enrich"))
}

func init() {
	err := service.RegisterBatchOutput("worker_control", spec(),
		func(conf *service.ParsedConfig, mgr *service.Resources) (service.BatchOutput, service.BatchPolicy, int, error) {
			worker, err := conf.FieldString("worker")
			return &output{worker: worker, log: mgr.Logger()}, service.BatchPolicy{}, 1, err
		})
	if err != nil {
		panic(err)
	}
}

type output struct {
	worker string
	log    *service.Logger
}

func (o *output) Connect(context.Context) error { return nil }

func (o *output) WriteBatch(_ context.Context, batch service.MessageBatch) error {
	stop := false
	for _, msg := range batch {
		raw, err := msg.AsBytes()
		if err != nil {
			continue
		}
		cmd := gjson.GetBytes(raw, "payload")
		if !cmd.Exists() {
			cmd = gjson.ParseBytes(raw)
		}
		action, by := cmd.Get("action").String(), cmd.Get("requested_by").String()
		if action == "stop" {
			o.log.Warnf("worker %s: stop requested by %q: finishing in-flight work and exiting", o.worker, by)
			stop = true
			continue
		}
		o.log.Infof("worker %s: control action %q from %q ignored (only stop is acted on)", o.worker, action, by)
	}
	if stop {
		// After this batch is acknowledged: the command must not be read
		// again by the restarted worker.
		go func() {
			if p, err := os.FindProcess(os.Getpid()); err == nil {
				_ = p.Signal(syscall.SIGTERM)
			}
		}()
	}
	return nil
}

func (o *output) Close(context.Context) error { return nil }
