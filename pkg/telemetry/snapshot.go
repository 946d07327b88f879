package telemetry

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"google.golang.org/protobuf/proto"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// desc describes one metric family.
type desc struct {
	name, help string
	typ        dto.MetricType
}

func gaugeDesc(name, help string) desc {
	return desc{name: name, help: help, typ: dto.MetricType_GAUGE}
}
func counterDesc(name, help string) desc {
	return desc{name: name, help: help, typ: dto.MetricType_COUNTER}
}

// labels is an ordered label set; the pairs are shared between series and
// never modified after creation.
type labels []*dto.LabelPair

func label(name, value string) *dto.LabelPair {
	return &dto.LabelPair{Name: proto.String(name), Value: proto.String(value)}
}

// with returns ls followed by more, in a new slice.
func (ls labels) with(more ...*dto.LabelPair) labels {
	out := make(labels, 0, len(ls)+len(more))
	return append(append(out, ls...), more...)
}

// builder accumulates the metric families of one collector or pass.
type builder struct {
	fams map[string]*dto.MetricFamily
}

func newBuilder() *builder { return &builder{fams: map[string]*dto.MetricFamily{}} }

func (b *builder) family(d *desc) *dto.MetricFamily {
	f := b.fams[d.name]
	if f == nil {
		f = &dto.MetricFamily{Name: proto.String(d.name), Help: proto.String(d.help), Type: d.typ.Enum()}
		b.fams[d.name] = f
	}
	return f
}

// add appends one sample of family d.
func (b *builder) add(d *desc, ls labels, v float64) {
	f := b.family(d)
	m := &dto.Metric{Label: ls}
	switch d.typ {
	case dto.MetricType_COUNTER:
		m.Counter = &dto.Counter{Value: proto.Float64(v)}
	default:
		m.Gauge = &dto.Gauge{Value: proto.Float64(v)}
	}
	f.Metric = append(f.Metric, m)
}

// gauge and counter are add with the family's type spelled out at the call.
func (b *builder) gauge(d *desc, ls labels, v float64)   { b.add(d, ls, v) }
func (b *builder) counter(d *desc, ls labels, v float64) { b.add(d, ls, v) }

// each adds the same value once per label set: a device held by several
// pods has one series per pod.
func (b *builder) each(d *desc, series []labels, v float64) {
	for _, ls := range series {
		b.add(d, ls, v)
	}
}

// number is what an optional reading can hold.
type number interface {
	~uint32 | ~uint64 | ~int | ~float64
}

// opt adds o's value once per label set when the reading is valid, and
// nothing when the device lacks it: an absent counter is an absent series,
// never a zero.
func opt[T number](b *builder, d *desc, series []labels, o gpu.Opt[T]) {
	if o.Valid {
		b.each(d, series, float64(o.Val))
	}
}

// merge moves o's families into b.
func (b *builder) merge(o *builder) {
	for name, f := range o.fams {
		if g := b.fams[name]; g != nil {
			g.Metric = append(g.Metric, f.Metric...)
			continue
		}
		b.fams[name] = f
	}
}

// snapshot is one immutable collection result: the names of its families
// and their text encoding, plain and gzipped. (The families themselves are
// not kept: the text is all a scrape serves.)
type snapshot struct {
	time  time.Time
	names map[string]bool
	text  []byte
	// gz is a gzip header and the deflate blocks of text, without a final
	// block or trailer (see handler.go); crc is text's CRC-32.
	gz  []byte
	crc uint32
}

// gzipHeader is a gzip member header: deflate, no flags, no time, unknown OS.
var gzipHeader = []byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff}

func emptySnapshot() *snapshot {
	s, err := newBuilder().encode(time.Time{}, nil)
	if err != nil {
		panic(err) // an empty builder always encodes
	}
	return s
}

// encode sorts the families by name and encodes them once in the text
// exposition format, plain and gzipped. prev, when not nil, is the previous
// snapshot, whose sizes preallocate the buffers: a snapshot keeps them for a
// whole interval, and doubling growth would leave up to half of them unused.
func (b *builder) encode(now time.Time, prev *snapshot) (*snapshot, error) {
	s := &snapshot{time: now, names: make(map[string]bool, len(b.fams))}
	families := make([]*dto.MetricFamily, 0, len(b.fams))
	for name, f := range b.fams {
		families = append(families, f)
		s.names[name] = true
	}
	slices.SortFunc(families, func(a, b *dto.MetricFamily) int { return strings.Compare(a.GetName(), b.GetName()) })
	var buf, gz bytes.Buffer
	if prev != nil {
		buf.Grow(len(prev.text) + len(prev.text)/16)
		gz.Grow(len(prev.gz) + len(prev.gz)/16)
	}
	for _, f := range families {
		if _, err := expfmt.MetricFamilyToText(&buf, f); err != nil {
			return nil, fmt.Errorf("encoding metric family %s: %w", f.GetName(), err)
		}
	}
	s.text = buf.Bytes()
	gz.Write(gzipHeader)
	fw := getFlate(&gz)
	defer putFlate(fw)
	if _, err := fw.Write(s.text); err != nil {
		return nil, fmt.Errorf("compressing metrics: %w", err)
	}
	// A sync flush ends the blocks on a byte boundary without a final
	// block, so that a scrape can append more blocks and the trailer.
	if err := fw.Flush(); err != nil {
		return nil, fmt.Errorf("compressing metrics: %w", err)
	}
	s.crc = crc32.ChecksumIEEE(s.text)
	s.gz = gz.Bytes()
	return s, nil
}
