package main

import (
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// A scatter plot of claim-to-Bound latency against the time each claim was
// created, drawn with the standard library only (and a 5x7 bitmap font
// below), one panel per run.

type panel struct {
	title  string
	points []point // x: seconds since the run started, y: latency in ms
}

var (
	colWhite = color.RGBA{255, 255, 255, 255}
	colText  = color.RGBA{30, 30, 30, 255}
	colAxis  = color.RGBA{90, 90, 90, 255}
	colGrid  = color.RGBA{225, 225, 225, 255}
	colPoint = color.RGBA{31, 119, 180, 255}
	colP50   = color.RGBA{44, 160, 44, 255}
	colP99   = color.RGBA{214, 39, 40, 255}
)

const (
	plotWidth   = 1200
	panelHeight = 460
	marginLeft  = 110
	marginRight = 40
	marginTop   = 60
	marginBot   = 70
	fontScale   = 2
)

func writePlot(path string, panels []panel) error {
	img := image.NewRGBA(image.Rect(0, 0, plotWidth, panelHeight*len(panels)))
	draw.Draw(img, img.Bounds(), &image.Uniform{colWhite}, image.Point{}, draw.Src)
	for i, p := range panels {
		drawPanel(img, image.Rect(0, i*panelHeight, plotWidth, (i+1)*panelHeight), p)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := png.Encode(f, img); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func drawPanel(img *image.RGBA, r image.Rectangle, p panel) {
	plot := image.Rect(r.Min.X+marginLeft, r.Min.Y+marginTop, r.Max.X-marginRight, r.Max.Y-marginBot)
	ys := make([]float64, len(p.points))
	maxX, maxY := 0.0, 0.0
	for i, pt := range p.points {
		ys[i] = pt.y
		maxX = math.Max(maxX, pt.x)
		maxY = math.Max(maxY, pt.y)
	}
	sort.Float64s(ys)
	p50, p99 := pct(ys, 0.50), pct(ys, 0.99)
	xStep := niceStep(maxX, 8)
	yStep := niceStep(maxY, 6)
	xMax := math.Max(xStep, math.Ceil(maxX/xStep)*xStep)
	yMax := math.Max(yStep, math.Ceil(maxY*1.02/yStep)*yStep)
	px := func(x float64) int { return plot.Min.X + int(math.Round(x/xMax*float64(plot.Dx()))) }
	py := func(y float64) int { return plot.Max.Y - int(math.Round(y/yMax*float64(plot.Dy()))) }

	// Grid and tick labels.
	for y := 0.0; y <= yMax+yStep/2; y += yStep {
		hline(img, plot.Min.X, plot.Max.X, py(y), colGrid)
		label := formatTick(y, yStep)
		drawText(img, plot.Min.X-10-textWidth(label), py(y)-7*fontScale/2, label, colText)
	}
	for x := 0.0; x <= xMax+xStep/2; x += xStep {
		vline(img, px(x), plot.Min.Y, plot.Max.Y, colGrid)
		label := formatTick(x, xStep)
		drawText(img, px(x)-textWidth(label)/2, plot.Max.Y+10, label, colText)
	}
	// Axes.
	hline(img, plot.Min.X, plot.Max.X, plot.Max.Y, colAxis)
	vline(img, plot.Min.X, plot.Min.Y, plot.Max.Y, colAxis)

	// Points.
	for _, pt := range p.points {
		x, y := px(pt.x), py(pt.y)
		for dx := -1; dx <= 1; dx++ {
			for dy := -1; dy <= 1; dy++ {
				blend(img, x+dx, y+dy, colPoint, 0.55)
			}
		}
	}
	// Percentile lines.
	dashed(img, plot.Min.X, plot.Max.X, py(p50), colP50)
	dashed(img, plot.Min.X, plot.Max.X, py(p99), colP99)

	title := fmt.Sprintf("%s: claim-to-Bound latency", p.title)
	drawText(img, plot.Min.X, r.Min.Y+12, title, colText)
	legend := fmt.Sprintf("p50 %s ms", formatMs(p50))
	drawText(img, plot.Min.X, r.Min.Y+34, legend, colP50)
	drawText(img, plot.Min.X+textWidth(legend+"   "), r.Min.Y+34, fmt.Sprintf("p99 %s ms", formatMs(p99)), colP99)
	xl := "seconds since the first claim was created"
	drawText(img, plot.Min.X+(plot.Dx()-textWidth(xl))/2, plot.Max.Y+38, xl, colText)
	yl := "latency (ms)"
	drawTextUp(img, r.Min.X+14, plot.Min.Y+(plot.Dy()+textWidth(yl))/2, yl, colText)
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func formatMs(v float64) string {
	if v >= 100 {
		return strconv.FormatFloat(math.Round(v), 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// niceStep returns a 1, 2 or 5 times a power of ten step giving about n
// intervals up to max.
func niceStep(max float64, n int) float64 {
	if max <= 0 {
		return 1
	}
	raw := max / float64(n)
	pow := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if raw <= m*pow {
			return m * pow
		}
	}
	return 10 * pow
}

func formatTick(v, step float64) string {
	decimals := 0
	if step < 1 {
		decimals = int(math.Ceil(-math.Log10(step)))
	}
	return strconv.FormatFloat(v, 'f', decimals, 64)
}

func hline(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		img.SetRGBA(x, y, c)
	}
}

func vline(img *image.RGBA, x, y0, y1 int, c color.RGBA) {
	for y := y0; y <= y1; y++ {
		img.SetRGBA(x, y, c)
	}
}

func dashed(img *image.RGBA, x0, x1, y int, c color.RGBA) {
	for x := x0; x <= x1; x++ {
		if (x-x0)%12 < 7 {
			img.SetRGBA(x, y, c)
			img.SetRGBA(x, y+1, c)
		}
	}
}

func blend(img *image.RGBA, x, y int, c color.RGBA, alpha float64) {
	if !(image.Point{x, y}.In(img.Bounds())) {
		return
	}
	o := img.RGBAAt(x, y)
	mix := func(a, b uint8) uint8 { return uint8(math.Round(float64(a)*(1-alpha) + float64(b)*alpha)) }
	img.SetRGBA(x, y, color.RGBA{mix(o.R, c.R), mix(o.G, c.G), mix(o.B, c.B), 255})
}

func textWidth(s string) int { return len(s) * 6 * fontScale }

// drawText writes s with its top-left corner at (x, y).
func drawText(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for i, r := range s {
		g := glyph(r)
		for row := range 7 {
			for col := range 5 {
				if g[row][col] != '#' {
					continue
				}
				for sy := range fontScale {
					for sx := range fontScale {
						img.SetRGBA(x+i*6*fontScale+col*fontScale+sx, y+row*fontScale+sy, c)
					}
				}
			}
		}
	}
}

// drawTextUp writes s bottom to top, starting at (x, y).
func drawTextUp(img *image.RGBA, x, y int, s string, c color.RGBA) {
	for i, r := range s {
		g := glyph(r)
		for row := range 7 {
			for col := range 5 {
				if g[row][col] != '#' {
					continue
				}
				for sy := range fontScale {
					for sx := range fontScale {
						img.SetRGBA(x+row*fontScale+sx, y-i*6*fontScale-col*fontScale-sy, c)
					}
				}
			}
		}
	}
}

func glyph(r rune) [7]string {
	if g, ok := font[r]; ok {
		return g
	}
	if g, ok := font[[]rune(strings.ToUpper(string(r)))[0]]; ok {
		return g
	}
	return font['?']
}

// font is a classic 5x7 bitmap font: upper case, digits and the punctuation
// the plot uses; lower case is drawn in upper case.
var font = map[rune][7]string{
	' ': {".....", ".....", ".....", ".....", ".....", ".....", "....."},
	'0': {".###.", "#...#", "#..##", "#.#.#", "##..#", "#...#", ".###."},
	'1': {"..#..", ".##..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'2': {".###.", "#...#", "....#", "...#.", "..#..", ".#...", "#####"},
	'3': {"#####", "...#.", "..#..", "...#.", "....#", "#...#", ".###."},
	'4': {"...#.", "..##.", ".#.#.", "#..#.", "#####", "...#.", "...#."},
	'5': {"#####", "#....", "####.", "....#", "....#", "#...#", ".###."},
	'6': {"..##.", ".#...", "#....", "####.", "#...#", "#...#", ".###."},
	'7': {"#####", "....#", "...#.", "..#..", ".#...", ".#...", ".#..."},
	'8': {".###.", "#...#", "#...#", ".###.", "#...#", "#...#", ".###."},
	'9': {".###.", "#...#", "#...#", ".####", "....#", "...#.", ".##.."},
	'A': {".###.", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'B': {"####.", "#...#", "#...#", "####.", "#...#", "#...#", "####."},
	'C': {".###.", "#...#", "#....", "#....", "#....", "#...#", ".###."},
	'D': {"###..", "#..#.", "#...#", "#...#", "#...#", "#..#.", "###.."},
	'E': {"#####", "#....", "#....", "####.", "#....", "#....", "#####"},
	'F': {"#####", "#....", "#....", "####.", "#....", "#....", "#...."},
	'G': {".###.", "#...#", "#....", "#.###", "#...#", "#...#", ".####"},
	'H': {"#...#", "#...#", "#...#", "#####", "#...#", "#...#", "#...#"},
	'I': {".###.", "..#..", "..#..", "..#..", "..#..", "..#..", ".###."},
	'J': {"..###", "...#.", "...#.", "...#.", "...#.", "#..#.", ".##.."},
	'K': {"#...#", "#..#.", "#.#..", "##...", "#.#..", "#..#.", "#...#"},
	'L': {"#....", "#....", "#....", "#....", "#....", "#....", "#####"},
	'M': {"#...#", "##.##", "#.#.#", "#.#.#", "#...#", "#...#", "#...#"},
	'N': {"#...#", "#...#", "##..#", "#.#.#", "#..##", "#...#", "#...#"},
	'O': {".###.", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'P': {"####.", "#...#", "#...#", "####.", "#....", "#....", "#...."},
	'Q': {".###.", "#...#", "#...#", "#...#", "#.#.#", "#..#.", ".##.#"},
	'R': {"####.", "#...#", "#...#", "####.", "#.#..", "#..#.", "#...#"},
	'S': {".####", "#....", "#....", ".###.", "....#", "....#", "####."},
	'T': {"#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."},
	'U': {"#...#", "#...#", "#...#", "#...#", "#...#", "#...#", ".###."},
	'V': {"#...#", "#...#", "#...#", "#...#", "#...#", ".#.#.", "..#.."},
	'W': {"#...#", "#...#", "#...#", "#.#.#", "#.#.#", "#.#.#", ".#.#."},
	'X': {"#...#", "#...#", ".#.#.", "..#..", ".#.#.", "#...#", "#...#"},
	'Y': {"#...#", "#...#", ".#.#.", "..#..", "..#..", "..#..", "..#.."},
	'Z': {"#####", "....#", "...#.", "..#..", ".#...", "#....", "#####"},
	'.': {".....", ".....", ".....", ".....", ".....", ".##..", ".##.."},
	',': {".....", ".....", ".....", ".....", ".##..", "..#..", ".#..."},
	':': {".....", ".##..", ".##..", ".....", ".##..", ".##..", "....."},
	'-': {".....", ".....", ".....", "#####", ".....", ".....", "....."},
	'/': {".....", "....#", "...#.", "..#..", ".#...", "#....", "....."},
	'(': {"...#.", "..#..", ".#...", ".#...", ".#...", "..#..", "...#."},
	')': {".#...", "..#..", "...#.", "...#.", "...#.", "..#..", ".#..."},
	'%': {"##..#", "##..#", "...#.", "..#..", ".#...", "#..##", "#..##"},
	'=': {".....", ".....", "#####", ".....", "#####", ".....", "....."},
	'+': {".....", "..#..", "..#..", "#####", "..#..", "..#..", "....."},
	'_': {".....", ".....", ".....", ".....", ".....", ".....", "#####"},
	'<': {"...#.", "..#..", ".#...", "#....", ".#...", "..#..", "...#."},
	'>': {".#...", "..#..", "...#.", "....#", "...#.", "..#..", ".#..."},
	'?': {".###.", "#...#", "....#", "...#.", "..#..", ".....", "..#.."},
}
