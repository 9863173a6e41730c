package main

import (
	"bytes"
	_ "embed"
	"fmt"
	"os"
	"path/filepath"
	"text/template"

	"github.com/redpanda-data/benthos/v4/public/service"
	ucli "github.com/urfave/cli/v2"
)

// OwnComponents lists the components this project adds, by kind. The docs
// command renders a reference page for each from its spec, so the docs are
// the specs and cannot drift from them.
var OwnComponents = map[string][]string{
	"inputs":     {"clickhouse_select", "decnet_bus", "decnet_webhook", "kafka_franz", "redpanda"},
	"outputs":    {"clickhouse", "concurrent_switch", "decnet_bus", "kafka_franz", "redpanda", "worker_control"},
	"processors": {"dead_letter", "intel_enrich", "topic_router"},
	"metrics":    {"prometheus"},
}

// docsCommand is `decnet-stream docs`: writes the configuration reference of
// this project's components as Markdown, generated from their specs.
func docsCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "docs",
		Usage: "Write the configuration reference of decnet-stream's own components",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "out", Value: "docs/components", Usage: "directory to write into"},
		},
		Action: func(c *ucli.Context) error {
			pages, err := RenderDocs(service.GlobalEnvironment())
			if err != nil {
				return err
			}
			for path, body := range pages {
				full := filepath.Join(c.String("out"), path)
				if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(full, body, 0o644); err != nil {
					return err
				}
				fmt.Fprintln(c.App.Writer, full)
			}
			return nil
		},
	}
}

//go:embed docs_page.tmpl
var pageTemplate string

var page = template.Must(template.New("page").Parse(pageTemplate))

// RenderDocs renders each of OwnComponents to a page keyed by its path
// ("inputs/kafka_franz.md").
func RenderDocs(env *service.Environment) (map[string][]byte, error) {
	pages := map[string][]byte{}
	render := func(kind string) func(string, *service.ConfigView) {
		wanted := map[string]bool{}
		for _, n := range OwnComponents[kind] {
			wanted[n] = true
		}
		return func(name string, view *service.ConfigView) {
			if !wanted[name] {
				return
			}
			var buf bytes.Buffer
			data, err := view.TemplateData()
			if err == nil {
				err = page.Execute(&buf, data)
			}
			if err != nil {
				buf.Reset()
				buf.WriteString("rendering failed: " + err.Error())
			}
			pages[filepath.Join(kind, name+".md")] = append(bytes.TrimSpace(buf.Bytes()), '\n')
		}
	}
	env.WalkInputs(render("inputs"))
	env.WalkOutputs(render("outputs"))
	env.WalkProcessors(render("processors"))
	env.WalkMetrics(render("metrics"))
	for kind, names := range OwnComponents {
		for _, n := range names {
			if _, ok := pages[filepath.Join(kind, n+".md")]; !ok {
				return nil, fmt.Errorf("component %s %s is not registered", kind, n)
			}
		}
	}
	return pages, nil
}
