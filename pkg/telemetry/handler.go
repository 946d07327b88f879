package telemetry

import (
	"bytes"
	"compress/flate"
	"encoding/binary"
	"hash/crc32"
	"io"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"
	"k8s.io/klog/v2"
)

var textContentType = string(expfmt.NewFormat(expfmt.TypeTextPlain))

// Handler serves /metrics: the latest snapshot, pre-encoded at collection
// time, followed by the families of extra (the agent's own registry: process
// and Go metrics, device-plugin and PodResources metrics), which are gathered
// per scrape and must be cheap. A family of extra whose name the snapshot
// already has is left out. When the client accepts gzip the snapshot is sent
// pre-compressed and only the extras are compressed per scrape.
//
// A scrape never calls the backend or the kubelet.
func (e *Exporter) Handler(extra ...prometheus.Gatherer) http.Handler {
	return &handler{e: e, extra: prometheus.Gatherers(extra)}
}

type handler struct {
	e     *Exporter
	extra prometheus.Gatherers
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// idleFlate keeps one idle BestSpeed deflate writer (about 0.8 MB of
// tables and buffers) for the snapshot encoder and the scrapes, which
// rarely overlap; an overlapping user makes a writer of its own and drops it.
// (A sync.Pool would keep one per P, plus a victim generation, of a
// long-lived daemon's heap.)
var idleFlate = make(chan *flate.Writer, 1)

// getFlate returns a BestSpeed deflate writer writing to w.
func getFlate(w io.Writer) *flate.Writer {
	select {
	case fw := <-idleFlate:
		fw.Reset(w)
		return fw
	default:
		fw, _ := flate.NewWriter(w, flate.BestSpeed) // the level is valid
		return fw
	}
}

// putFlate gives fw back for reuse, unless a writer is idle already.
func putFlate(fw *flate.Writer) {
	fw.Reset(io.Discard) // drop the reference to the last destination
	select {
	case idleFlate <- fw:
	default:
	}
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	snap := h.e.snap.Load()
	extra := bufPool.Get().(*bytes.Buffer)
	defer bufPool.Put(extra)
	extra.Reset()
	if len(h.extra) > 0 {
		fams, err := h.extra.Gather()
		if err != nil {
			// Gather returns what it could; serve that, as promhttp's ContinueOnError does.
			klog.FromContext(r.Context()).Error(err, "Gathering extra metrics for /metrics")
		}
		for _, f := range fams {
			if snap.names[f.GetName()] {
				continue
			}
			if _, err := expfmt.MetricFamilyToText(extra, f); err != nil {
				klog.FromContext(r.Context()).Error(err, "Encoding extra metric family", "family", f.GetName())
			}
		}
	}
	w.Header().Set("Content-Type", textContentType)
	if !acceptsGzip(r.Header.Get("Accept-Encoding")) {
		_, _ = w.Write(snap.text)
		_, _ = w.Write(extra.Bytes())
		return
	}
	w.Header().Set("Content-Encoding", "gzip")
	w.Header().Add("Vary", "Accept-Encoding")
	// One gzip member: the snapshot's pre-compressed blocks, the extras'
	// blocks with the final-block bit, and a trailer over both. (Tools
	// that read only the first member of a multi-member stream would miss
	// the extras otherwise.)
	if _, err := w.Write(snap.gz); err != nil {
		return
	}
	fw := getFlate(w)
	defer putFlate(fw)
	if _, err := fw.Write(extra.Bytes()); err != nil {
		return
	}
	if err := fw.Close(); err != nil {
		return
	}
	var trailer [8]byte
	binary.LittleEndian.PutUint32(trailer[:4], crc32.Update(snap.crc, crc32.IEEETable, extra.Bytes()))
	binary.LittleEndian.PutUint32(trailer[4:], uint32(len(snap.text)+extra.Len())) //nolint:gosec // ISIZE is the size modulo 2^32
	_, _ = w.Write(trailer[:])
}

// acceptsGzip reports whether an Accept-Encoding header allows gzip.
func acceptsGzip(header string) bool {
	for part := range strings.SplitSeq(header, ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if !strings.EqualFold(strings.TrimSpace(coding), "gzip") {
			continue
		}
		q := strings.ReplaceAll(params, " ", "")
		return q != "q=0" && q != "q=0.0" && q != "q=0.00" && q != "q=0.000"
	}
	return false
}
