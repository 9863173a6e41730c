// Package prometheus adds the prometheus metrics exporter: every Benthos and
// decnet-stream metric served in Prometheus' text format at /metrics on the
// service's HTTP server, optionally pushed to a Push Gateway. Core Benthos
// has no such exporter; the fields follow upstream Redpanda Connect's, so a
// config written for it works here.
package prometheus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	prom "github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/push"
	"github.com/redpanda-data/benthos/v4/public/service"
)

const (
	fieldUseHistogram       = "use_histogram_timing"
	fieldUseHistogramPlural = "use_histogram_timings"
	fieldBuckets            = "histogram_buckets"
	fieldObjectives         = "summary_quantiles_objectives"
	fieldQuantile           = "quantile"
	fieldError              = "error"
	fieldProcessMetrics     = "add_process_metrics"
	fieldGoMetrics          = "add_go_metrics"
	fieldPushURL            = "push_url"
	fieldPushInterval       = "push_interval"
	fieldPushJobName        = "push_job_name"
	fieldPushBasicAuth      = "push_basic_auth"
	fieldUsername           = "username"
	fieldPassword           = "password"
	fieldFileOutputPath     = "file_output_path"
)

func spec() *service.ConfigSpec {
	return service.NewConfigSpec().
		Stable().
		Summary("Serves every metric at `/metrics` in Prometheus' text format, for scraping.").
		Description(`
The service's HTTP server (`+"`http.address`"+`, default `+"`0.0.0.0:4195`"+`) serves the metrics at `+"`/metrics`"+`
(and `+"`/stats`"+`). Names are Benthos' (`+"`input_received`"+`, `+"`output_latency_ns`"+`, …) and this project's
(`+"`intel_provider_calls`"+`, `+"`kafka_consumer_lag`"+`, …); labels as each component gives them.

Timings are a summary in nanoseconds by default; with `+"`use_histogram_timing`"+` a histogram in seconds,
which Prometheus can aggregate across replicas (`+"`histogram_quantile`"+`).

With `+"`push_url`"+`, metrics are also pushed to a Prometheus Push Gateway every `+"`push_interval`"+` (when set)
and once at shutdown: for short-lived runs nothing scrapes.

The fields are upstream Redpanda Connect's, so a config written for it lints here.`).
		Fields(
			service.NewBoolField(fieldUseHistogram).
				Description("Export timings as histograms (in seconds) instead of summaries (in nanoseconds).").
				Default(false),
			service.NewBoolField(fieldUseHistogramPlural).
				Description("The same as `use_histogram_timing` (either turns histograms on).").
				Default(false).
				Advanced(),
			service.NewFloatListField(fieldBuckets).
				Description("Histogram buckets, in seconds. Empty: Prometheus' default buckets.").
				Default([]any{}).
				Advanced(),
			service.NewObjectListField(fieldObjectives,
				service.NewFloatField(fieldQuantile).Description("A quantile, between 0 and 1."),
				service.NewFloatField(fieldError).Description("Its allowed absolute error."),
			).
				Description("The quantiles a timing summary reports, each with its error.").
				Default([]any{
					map[string]any{fieldQuantile: 0.5, fieldError: 0.05},
					map[string]any{fieldQuantile: 0.9, fieldError: 0.01},
					map[string]any{fieldQuantile: 0.99, fieldError: 0.001},
				}).
				Advanced(),
			service.NewBoolField(fieldProcessMetrics).
				Description("Also export the process's CPU, memory and file descriptors.").
				Default(false),
			service.NewBoolField(fieldGoMetrics).
				Description("Also export Go runtime metrics (GC pauses, goroutines, heap).").
				Default(false),
			service.NewURLField(fieldPushURL).
				Description("A Push Gateway to push metrics to (without the `/metrics/jobs/…` path).").
				Optional().
				Advanced(),
			service.NewStringField(fieldPushInterval).
				Description("How often to push; empty: only at shutdown.").
				Optional().
				Advanced(),
			service.NewStringField(fieldPushJobName).
				Description("The job name pushed metrics are grouped under.").
				Default("benthos_push").
				Advanced(),
			service.NewObjectField(fieldPushBasicAuth,
				service.NewStringField(fieldUsername).Description("The user name.").Default(""),
				service.NewStringField(fieldPassword).Description("The password.").Default("").Secret(),
			).
				Description("Basic authentication for the Push Gateway.").
				Advanced(),
			service.NewStringField(fieldFileOutputPath).
				Description("A file to write every metric to at shutdown, in the text format; empty: none.").
				Default("").
				Advanced(),
		)
}

func init() {
	err := service.RegisterMetricsExporter("prometheus", spec(),
		func(conf *service.ParsedConfig, log *service.Logger) (service.MetricsExporter, error) {
			return newExporter(conf, log)
		})
	if err != nil {
		panic(err)
	}
}

// exporter keeps one collector per metric name: Benthos asks for the same
// name once per component (every input's input_received, with its own
// label values), and Prometheus registers a name once.
type exporter struct {
	log      *service.Logger
	reg      *prom.Registry
	handler  http.Handler
	histos   bool
	buckets  []float64
	quantile map[float64]float64

	mu   sync.Mutex
	vecs map[string]registered

	pusher   *push.Pusher
	stopPush chan struct{}
	pushDone chan struct{}
	fileOut  string
}

// registered is a collector and the label keys it was made with.
type registered struct {
	collector prom.Collector
	labels    string
}

func newExporter(conf *service.ParsedConfig, log *service.Logger) (*exporter, error) {
	e := &exporter{log: log, reg: prom.NewRegistry(), vecs: map[string]registered{}, quantile: map[float64]float64{}}
	var err error
	one, _ := conf.FieldBool(fieldUseHistogram)
	two, _ := conf.FieldBool(fieldUseHistogramPlural)
	e.histos = one || two
	if e.buckets, err = conf.FieldFloatList(fieldBuckets); err != nil {
		return nil, err
	}
	if len(e.buckets) == 0 {
		e.buckets = prom.DefBuckets
	}
	objs, err := conf.FieldObjectList(fieldObjectives)
	if err != nil {
		return nil, err
	}
	for i, o := range objs {
		q, err := o.FieldFloat(fieldQuantile)
		if err != nil {
			return nil, err
		}
		qe, err := o.FieldFloat(fieldError)
		if err != nil {
			return nil, err
		}
		if q < 0 || q > 1 || qe < 0 || qe > 1 {
			return nil, fmt.Errorf("%s[%d]: quantile and error must be between 0 and 1", fieldObjectives, i)
		}
		e.quantile[q] = qe
	}
	if on, _ := conf.FieldBool(fieldProcessMetrics); on {
		e.reg.MustRegister(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if on, _ := conf.FieldBool(fieldGoMetrics); on {
		e.reg.MustRegister(collectors.NewGoCollector())
	}
	if e.fileOut, err = conf.FieldString(fieldFileOutputPath); err != nil {
		return nil, err
	}
	e.handler = promhttp.HandlerFor(e.reg, promhttp.HandlerOpts{ErrorLog: promLogger{log}})
	if conf.Contains(fieldPushURL) {
		if err := e.startPush(conf); err != nil {
			return nil, err
		}
	}
	return e, nil
}

func (e *exporter) startPush(conf *service.ParsedConfig) error {
	u, err := conf.FieldURL(fieldPushURL)
	if err != nil {
		return err
	}
	job, err := conf.FieldString(fieldPushJobName)
	if err != nil {
		return err
	}
	e.pusher = push.New(u.String(), job).Gatherer(e.reg)
	auth := conf.Namespace(fieldPushBasicAuth)
	user, _ := auth.FieldString(fieldUsername)
	pass, _ := auth.FieldString(fieldPassword)
	if user != "" || pass != "" {
		e.pusher = e.pusher.BasicAuth(user, pass)
	}
	var every time.Duration
	if conf.Contains(fieldPushInterval) {
		s, err := conf.FieldString(fieldPushInterval)
		if err != nil {
			return err
		}
		if s != "" {
			if every, err = time.ParseDuration(s); err != nil || every <= 0 {
				return fmt.Errorf("%s: %q is not a positive duration", fieldPushInterval, s)
			}
		}
	}
	if every == 0 {
		return nil
	}
	e.stopPush, e.pushDone = make(chan struct{}), make(chan struct{})
	go func() {
		defer close(e.pushDone)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if err := e.pusher.Push(); err != nil {
					e.log.Warnf("Pushing metrics to the Push Gateway: %v", err)
				}
			case <-e.stopPush:
				return
			}
		}
	}()
	return nil
}

// HandlerFunc serves the metrics; Benthos mounts it at /metrics and /stats.
func (e *exporter) HandlerFunc() http.HandlerFunc { return e.handler.ServeHTTP }

// Close pushes one last time and writes the file, when asked to.
func (e *exporter) Close(context.Context) error {
	if e.stopPush != nil {
		close(e.stopPush)
		<-e.pushDone
	}
	var errs []error
	if e.pusher != nil {
		if err := e.pusher.Push(); err != nil {
			errs = append(errs, fmt.Errorf("pushing metrics: %w", err))
		}
	}
	if e.fileOut != "" {
		if err := prom.WriteToTextfile(e.fileOut, e.reg); err != nil {
			errs = append(errs, fmt.Errorf("writing metrics to %s: %w", e.fileOut, err))
		}
	}
	return errors.Join(errs...)
}

// collector returns the collector registered under name, making it with
// build when there is none. A name asked for again with other label keys
// cannot be exported (Prometheus allows one set per name): it is logged
// and its values are dropped.
func (e *exporter) collector(name string, labelKeys []string, build func(name string, labels []string) prom.Collector) prom.Collector {
	name = metricName(name)
	labels := make([]string, len(labelKeys))
	for i, l := range labelKeys {
		labels[i] = metricName(l)
	}
	keys := strings.Join(labels, ",")
	e.mu.Lock()
	defer e.mu.Unlock()
	if r, ok := e.vecs[name]; ok {
		if r.labels != keys {
			e.log.Warnf("Metric %s asked for with labels [%s] after [%s]: only the first is exported", name, keys, r.labels)
			return nil
		}
		return r.collector
	}
	c := build(name, labels)
	if err := e.reg.Register(c); err != nil {
		e.log.Warnf("Metric %s cannot be exported: %v", name, err)
		return nil
	}
	e.vecs[name] = registered{collector: c, labels: keys}
	return c
}

func (e *exporter) NewCounterCtor(name string, labelKeys ...string) service.MetricsExporterCounterCtor {
	c, _ := e.collector(name, labelKeys, func(name string, labels []string) prom.Collector {
		return prom.NewCounterVec(prom.CounterOpts{Name: name, Help: "Benthos counter " + name}, labels)
	}).(*prom.CounterVec)
	return func(values ...string) service.MetricsExporterCounter {
		if c == nil {
			return dropped{}
		}
		return counter{c.WithLabelValues(values...)}
	}
}

func (e *exporter) NewTimerCtor(name string, labelKeys ...string) service.MetricsExporterTimerCtor {
	if e.histos {
		h, _ := e.collector(name, labelKeys, func(name string, labels []string) prom.Collector {
			return prom.NewHistogramVec(prom.HistogramOpts{Name: name, Help: "Benthos timing " + name + ", in seconds", Buckets: e.buckets}, labels)
		}).(*prom.HistogramVec)
		return func(values ...string) service.MetricsExporterTimer {
			if h == nil {
				return dropped{}
			}
			return histogramTimer{h.WithLabelValues(values...)}
		}
	}
	s, _ := e.collector(name, labelKeys, func(name string, labels []string) prom.Collector {
		return prom.NewSummaryVec(prom.SummaryOpts{Name: name, Help: "Benthos timing " + name + ", in nanoseconds", Objectives: e.quantile}, labels)
	}).(*prom.SummaryVec)
	return func(values ...string) service.MetricsExporterTimer {
		if s == nil {
			return dropped{}
		}
		return summaryTimer{s.WithLabelValues(values...)}
	}
}

func (e *exporter) NewGaugeCtor(name string, labelKeys ...string) service.MetricsExporterGaugeCtor {
	g, _ := e.collector(name, labelKeys, func(name string, labels []string) prom.Collector {
		return prom.NewGaugeVec(prom.GaugeOpts{Name: name, Help: "Benthos gauge " + name}, labels)
	}).(*prom.GaugeVec)
	return func(values ...string) service.MetricsExporterGauge {
		if g == nil {
			return dropped{}
		}
		return gauge{g.WithLabelValues(values...)}
	}
}

type counter struct{ c prom.Counter }

func (c counter) Incr(n int64) { c.c.Add(float64(n)) }

type gauge struct{ g prom.Gauge }

func (g gauge) Set(v int64) { g.g.Set(float64(v)) }

// histogramTimer observes seconds: Benthos times in nanoseconds, and
// buckets are in seconds, as Prometheus' conventions want.
type histogramTimer struct{ o prom.Observer }

func (t histogramTimer) Timing(ns int64) { t.o.Observe(float64(ns) / 1e9) }

type summaryTimer struct{ o prom.Observer }

func (t summaryTimer) Timing(ns int64) { t.o.Observe(float64(ns)) }

// dropped stands in for a metric that cannot be exported.
type dropped struct{}

func (dropped) Incr(int64)   {}
func (dropped) Set(int64)    {}
func (dropped) Timing(int64) {}

// metricName makes s a legal Prometheus metric or label name: a letter or
// underscore first, then letters, digits and underscores (a dotted Benthos
// path becomes underscored, as upstream exports it).
func metricName(s string) string {
	if s == "" {
		return "_"
	}
	b := []byte(s)
	for i, c := range b {
		ok := c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9'
		if !ok {
			b[i] = '_'
		}
	}
	return string(b)
}

// promLogger sends promhttp's errors to the service's log.
type promLogger struct{ log *service.Logger }

func (l promLogger) Println(v ...any) { l.log.Errorf("Serving metrics: %s", fmt.Sprint(v...)) }
