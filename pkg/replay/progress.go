package replay

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// Progress reports finished replays on w: a redrawn bar when w is a
// terminal, one plain line per replay otherwise.
type Progress struct {
	w     io.Writer
	tty   bool
	start time.Time
	now   func() time.Time
}

// NewProgress returns a progress reporter writing to w; tty selects the bar.
func NewProgress(w io.Writer, tty bool) *Progress {
	return &Progress{w: w, tty: tty, start: time.Now(), now: time.Now}
}

// Update reports that done of total replays are finished, r being the last.
// Write errors are ignored: progress is best effort.
func (p *Progress) Update(done, total int, r *Result) {
	if !p.tty {
		_, _ = fmt.Fprintf(p.w, "run %d/%d trace=%s policy=%s seed=%d pods=%d failed=%d alloc@100=%s alloc@130=%s wall=%s\n",
			done, total, r.Trace, r.Policy, r.Seed, r.Pods, r.Failed,
			fmtNum(r.Curve.At(100), 2), fmtNum(r.Curve.At(130), 2), r.Wall.Round(time.Millisecond))
		return
	}
	const width = 30
	filled := width * done / max(total, 1)
	elapsed := p.now().Sub(p.start)
	eta := "?"
	if done > 0 {
		eta = (elapsed * time.Duration(total-done) / time.Duration(done)).Round(time.Second).String()
	}
	_, _ = fmt.Fprintf(p.w, "\r[%s%s] %d/%d  %s %s seed %d  elapsed %s  eta %s\x1b[K",
		strings.Repeat("=", filled), strings.Repeat(" ", width-filled), done, total,
		r.Trace, r.Policy, r.Seed, elapsed.Round(time.Second), eta)
	if done == total {
		_, _ = fmt.Fprintln(p.w)
	}
}
