package main

import (
	"os"
	"path/filepath"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// plotSweep draws events/s against provider latency, ours and the stock
// alternative's, on a log scale (they are orders of magnitude apart).
func plotSweep(path string, points []sweepPoint) error {
	p := plot.New()
	p.Title.Text = "Events/s against provider latency (same binary, broker, events)"
	p.X.Label.Text = "provider latency (ms)"
	p.Y.Label.Text = "events/s (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	ours, stock := make(plotter.XYs, len(points)), make(plotter.XYs, len(points))
	for i, pt := range points {
		ms := float64(pt.latency.Milliseconds())
		ours[i] = plotter.XY{X: ms, Y: pt.ours}
		stock[i] = plotter.XY{X: ms, Y: pt.stock}
	}
	if err := plotutil.AddLinePoints(p, "decnet-stream (pipeline.yaml)", ours, "stock (branch + cached + http + rate_limit)", stock); err != nil {
		return err
	}
	p.Legend.Top, p.Legend.Left = false, true
	p.Y.Min, p.Y.Max = 100, 1e6 // room for the legend under the lines
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}
