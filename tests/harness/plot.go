package harness

import (
	"fmt"
	"image/color"
	"os"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// WritePlot draws, for every scenario with a timeline, the lag (measured
// by the harness, and as the writer reports it) and the spool depth over
// the run, one row per scenario, into a PNG file.
func WritePlot(path string, results []*Result) error {
	var rows [][]*plot.Plot
	for _, r := range results {
		if len(r.Timeline) == 0 {
			continue
		}
		lag, pubLag := plotter.XYs{}, plotter.XYs{}
		rxDepth, wxDepth := plotter.XYs{}, plotter.XYs{}
		for i, s := range r.Timeline {
			t := s.At.Sub(r.Started).Seconds()
			lag = append(lag, plotter.XY{X: t, Y: s.LagSeconds})
			if i < len(r.PublishLag) {
				pubLag = append(pubLag, plotter.XY{X: t, Y: r.PublishLag[i]})
			}
			rxDepth = append(rxDepth, plotter.XY{X: t, Y: s.ReceiverDepth})
			wxDepth = append(wxDepth, plotter.XY{X: t, Y: s.WriterDepth})
		}
		lp := plot.New()
		lp.Title.Text = r.Name + ": lag"
		lp.X.Label.Text = "seconds since start"
		lp.Y.Label.Text = "seconds"
		if err := addLine(lp, pubLag, "oldest published, not yet in the DB", color.RGBA{R: 200, A: 255}); err != nil {
			return err
		}
		if err := addLine(lp, lag, "writer's lag_seconds (grows while idle)", color.RGBA{R: 120, G: 120, B: 120, A: 255}); err != nil {
			return err
		}
		lp.Legend.Top = true
		dp := plot.New()
		dp.Title.Text = r.Name + ": spool depth"
		dp.X.Label.Text = "seconds since start"
		dp.Y.Label.Text = "records"
		if err := addLine(dp, rxDepth, "receiver's view", color.RGBA{B: 200, A: 255}); err != nil {
			return err
		}
		if err := addLine(dp, wxDepth, "writer's view", color.RGBA{G: 150, A: 255}); err != nil {
			return err
		}
		dp.Legend.Top = true
		rows = append(rows, []*plot.Plot{lp, dp})
	}
	if len(rows) == 0 {
		return fmt.Errorf("plot %s: no scenario has a timeline", path)
	}
	img := vgimg.New(11*vg.Inch, vg.Length(len(rows))*2.4*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: len(rows), Cols: 2, PadX: vg.Millimeter * 4, PadY: vg.Millimeter * 4,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	canvases := plot.Align(rows, tiles, dc)
	for i := range rows {
		for j := range rows[i] {
			rows[i][j].Draw(canvases[i][j])
		}
	}
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", path, err)
	}
	return f.Close()
}

func addLine(p *plot.Plot, xys plotter.XYs, name string, c color.Color) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(1)
	p.Add(l)
	p.Legend.Add(name, l)
	return nil
}
