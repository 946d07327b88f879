package telemetry

import (
	"bytes"
	"compress/gzip"
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
// pre-compressed, followed by a second gzip member with the extras; gzip
// readers (Go's, Prometheus') read such multi-member streams as one.
//
// A scrape never calls the backend or the kubelet.
func (e *Exporter) Handler(extra ...prometheus.Gatherer) http.Handler {
	return &handler{e: e, extra: prometheus.Gatherers(extra)}
}

type handler struct {
	e     *Exporter
	extra prometheus.Gatherers
}

var (
	bufPool  = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	gzipPool = sync.Pool{New: func() any {
		w, _ := gzip.NewWriterLevel(io.Discard, gzip.BestSpeed) // the level is valid
		return w
	}}
)

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
	if _, err := w.Write(snap.gz); err != nil {
		return
	}
	if extra.Len() == 0 {
		return
	}
	zw := gzipPool.Get().(*gzip.Writer)
	defer gzipPool.Put(zw)
	zw.Reset(w)
	_, _ = zw.Write(extra.Bytes())
	_ = zw.Close()
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
