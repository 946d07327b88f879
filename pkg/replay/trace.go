package replay

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/tessera-gpu/tessera/pkg/scoring"
)

// MilliPerGPU is the capacity of one GPU in milli-GPU units.
const MilliPerGPU = 1000

// DefaultPodLimit is the pod capacity of every node in the protocol.
const DefaultPodLimit = 1001

// Issue is one problem found in an input file, located by file and line.
type Issue struct {
	File string
	Line int
	Msg  string
	// Skipped is true when the row was dropped; false when it was kept with a
	// warning (for example a gpu_spec naming a model no node has).
	Skipped bool
}

func (i Issue) String() string { return fmt.Sprintf("%s:%d: %s", i.File, i.Line, i.Msg) }

// Issues collects the problems found while reading one file.
type Issues struct {
	List []Issue
}

// Skipped is the number of rows that were dropped.
func (is *Issues) Skipped() int {
	n := 0
	for _, i := range is.List {
		if i.Skipped {
			n++
		}
	}
	return n
}

// Warned is the number of rows that were kept with a warning.
func (is *Issues) Warned() int { return len(is.List) - is.Skipped() }

func (is *Issues) skip(file string, line int, format string, args ...any) {
	is.List = append(is.List, Issue{File: file, Line: line, Msg: fmt.Sprintf(format, args...), Skipped: true})
}

func (is *Issues) warn(file string, line int, format string, args ...any) {
	is.List = append(is.List, Issue{File: file, Line: line, Msg: fmt.Sprintf(format, args...)})
}

// WriteIssues writes at most limit issues (all when limit < 0) and a count line
// per file to w.
func WriteIssues(w io.Writer, file string, is *Issues, limit int) error {
	for n, i := range is.List {
		if limit >= 0 && n >= limit {
			if _, err := fmt.Fprintf(w, "%s: ... %d more\n", file, len(is.List)-limit); err != nil {
				return fmt.Errorf("writing issues of %s: %w", file, err)
			}
			break
		}
		if _, err := fmt.Fprintln(w, i.String()); err != nil {
			return fmt.Errorf("writing issues of %s: %w", file, err)
		}
	}
	if len(is.List) > 0 {
		if _, err := fmt.Fprintf(w, "%s: %d rows skipped, %d rows kept with a warning\n", file, is.Skipped(), is.Warned()); err != nil {
			return fmt.Errorf("writing issues of %s: %w", file, err)
		}
	}
	return nil
}

// Node is one machine of the cluster, as read from the node CSV.
type Node struct {
	Name     string
	CPU      int64 // milli-CPU
	Memory   int64 // MiB
	GPUs     int
	Model    string
	ModelID  int // index into Cluster.Models
	PodLimit int
	Line     int
}

// Cluster is the set of nodes, sorted by name (byte order), and the GPU models
// they carry.
type Cluster struct {
	File   string
	Nodes  []Node
	Models []string // sorted; Node.ModelID indexes it
	Issues Issues
}

// TotalGPUs is the number of GPUs in the cluster.
func (c *Cluster) TotalGPUs() int {
	n := 0
	for i := range c.Nodes {
		n += c.Nodes[i].GPUs
	}
	return n
}

// TotalGPUMilli is the GPU capacity of the cluster in milli-GPU.
func (c *Cluster) TotalGPUMilli() int64 { return int64(c.TotalGPUs()) * MilliPerGPU }

// TotalCPU is the CPU capacity of the cluster in milli-CPU.
func (c *Cluster) TotalCPU() int64 {
	var n int64
	for i := range c.Nodes {
		n += c.Nodes[i].CPU
	}
	return n
}

func (c *Cluster) modelID(name string) (int, bool) {
	i := sort.SearchStrings(c.Models, name)
	if i < len(c.Models) && c.Models[i] == name {
		return i, true
	}
	return 0, false
}

// Pod is one row of a pod CSV, reduced to what the protocol uses.
type Pod struct {
	Name   string
	CPU    int64 // milli-CPU
	Memory int64 // MiB
	// K is the number of GPUs and G the milli-GPU requested on each of them
	// (clamped to [0, 1000]); K = G = 0 for a pod without a GPU request.
	K int
	G int64
	// Spec is the gpu_spec value as written ("" for none); Allowed is nil when
	// any model will do, else Allowed[modelID] says whether that model may host
	// the pod.
	Spec    string
	Allowed []bool
	// Class identifies the pod's (CPU, K, G) shape within its trace: scores of
	// every policy here depend on the pod only through it. In a scenario
	// replay it is the pod kind's index.
	Class int
	Line  int
	// Request is a scenario pod's demand, compiled by the reference scorer
	// (Run.Scorer); nil for trace pods.
	Request *scoring.Request
}

// Demand is the pod's total GPU request in milli-GPU (K·G).
func (p *Pod) Demand() int64 { return int64(p.K) * p.G }

// Shared reports whether the pod asks for part of one GPU.
func (p *Pod) Shared() bool { return p.K == 1 && p.G > 0 && p.G < MilliPerGPU }

// AllowsModel reports whether the pod's gpu_spec admits the model.
func (p *Pod) AllowsModel(modelID int) bool { return p.Allowed == nil || p.Allowed[modelID] }

// Trace is one pod CSV: its pods sorted by name (the protocol's "original
// list") and the target workload built from them.
type Trace struct {
	Name    string
	File    string
	Pods    []Pod
	Classes int
	Target  *TargetWorkload
	Issues  Issues
}

// TotalDemand is Σ K·G over the pods, in milli-GPU.
func (t *Trace) TotalDemand() int64 {
	var s int64
	for i := range t.Pods {
		s += t.Pods[i].Demand()
	}
	return s
}

// TraceName derives a short trace name from a pod CSV path:
// ".../openb_pod_list_gpushare40.csv" gives "gpushare40".
func TraceName(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	return strings.TrimPrefix(base, "openb_pod_list_")
}

// csvTable reads a CSV file with a header row and hands each data row to fn,
// with its line number and the column index of each requested name.
type csvTable struct {
	file   string
	r      *csv.Reader
	header map[string]int
}

func openCSV(file string, rd io.Reader, required []string) (*csvTable, error) {
	r := csv.NewReader(rd)
	r.FieldsPerRecord = -1
	r.ReuseRecord = true
	head, err := r.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s:1: empty file, want a header with columns %s", file, strings.Join(required, ","))
	}
	if err != nil {
		return nil, fmt.Errorf("%s:1: reading header: %w", file, err)
	}
	t := &csvTable{file: file, r: r, header: map[string]int{}}
	for i, h := range head {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if _, dup := t.header[h]; !dup {
			t.header[h] = i
		}
	}
	var missing []string
	for _, c := range required {
		if _, ok := t.header[c]; !ok {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s:1: header lacks column(s) %s (want %s)", file,
			strings.Join(missing, ","), strings.Join(required, ","))
	}
	return t, nil
}

// rows calls fn for each record; parse errors of single records are recorded
// as skipped rows and reading goes on.
func (t *csvTable) rows(is *Issues, fn func(line int, rec []string)) error {
	for {
		rec, err := t.r.Read()
		if errors.Is(err, io.EOF) {
			return nil
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			is.skip(t.file, pe.StartLine, "malformed csv: %v", pe.Err)
			continue
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", t.file, err)
		}
		line, _ := t.r.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // blank line
		}
		if len(rec) < len(t.header) {
			is.skip(t.file, line, "row has %d fields, header has %d", len(rec), len(t.header))
			continue
		}
		fn(line, rec)
	}
}

func (t *csvTable) get(rec []string, col string) string {
	return strings.TrimSpace(rec[t.header[col]])
}

// intField parses a non-negative integer column.
func (t *csvTable) intField(rec []string, col string) (int64, error) {
	s := t.get(rec, col)
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("column %s: %q is not an integer", col, s)
	}
	if v < 0 {
		return 0, fmt.Errorf("column %s: %d is negative", col, v)
	}
	return v, nil
}

// LoadCluster reads an openb node CSV (columns sn, cpu_milli, memory_mib, gpu,
// model). Bad rows are skipped and recorded in Cluster.Issues; an unreadable
// file, a missing column or a file without any valid node is an error.
func LoadCluster(path string) (*Cluster, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening node csv: %w", err)
	}
	defer func() { _ = f.Close() }()
	return ReadCluster(path, f)
}

// ReadCluster is LoadCluster over a reader; name is used in messages.
func ReadCluster(name string, rd io.Reader) (*Cluster, error) {
	t, err := openCSV(name, rd, []string{"sn", "cpu_milli", "memory_mib", "gpu", "model"})
	if err != nil {
		return nil, err
	}
	c := &Cluster{File: name}
	seen := map[string]int{}
	err = t.rows(&c.Issues, func(line int, rec []string) {
		n := Node{Name: t.get(rec, "sn"), Model: t.get(rec, "model"), PodLimit: DefaultPodLimit, Line: line}
		if n.Name == "" {
			c.Issues.skip(name, line, "column sn: empty node name")
			return
		}
		if first, dup := seen[n.Name]; dup {
			c.Issues.skip(name, line, "duplicate node %q (first on line %d)", n.Name, first)
			return
		}
		var gpus int64
		for _, fld := range []struct {
			col string
			dst *int64
		}{{"cpu_milli", &n.CPU}, {"memory_mib", &n.Memory}, {"gpu", &gpus}} {
			v, err := t.intField(rec, fld.col)
			if err != nil {
				c.Issues.skip(name, line, "node %s: %v", n.Name, err)
				return
			}
			*fld.dst = v
		}
		if gpus > 1<<16 {
			c.Issues.skip(name, line, "node %s: column gpu: %d GPUs on one node is not plausible", n.Name, gpus)
			return
		}
		n.GPUs = int(gpus)
		if n.GPUs > 0 && n.Model == "" {
			c.Issues.skip(name, line, "node %s: column model: empty model for a node with %d GPUs", n.Name, n.GPUs)
			return
		}
		seen[n.Name] = line
		c.Nodes = append(c.Nodes, n)
	})
	if err != nil {
		return nil, err
	}
	if len(c.Nodes) == 0 {
		return nil, fmt.Errorf("%s: no valid node rows", name)
	}
	sort.SliceStable(c.Nodes, func(i, j int) bool { return c.Nodes[i].Name < c.Nodes[j].Name })
	models := map[string]bool{}
	for _, n := range c.Nodes {
		if n.Model != "" {
			models[n.Model] = true
		}
	}
	for m := range models {
		c.Models = append(c.Models, m)
	}
	sort.Strings(c.Models)
	for i := range c.Nodes {
		c.Nodes[i].ModelID, _ = c.modelID(c.Nodes[i].Model)
		if c.Nodes[i].Model == "" {
			c.Nodes[i].ModelID = -1
		}
	}
	return c, nil
}

// LoadTrace reads an openb pod CSV (columns name, cpu_milli, memory_mib,
// num_gpu, gpu_milli and, optionally, gpu_spec; others are ignored) against
// the cluster c. Bad rows are skipped and recorded in Trace.Issues; rows whose
// gpu_spec names a model no node has are kept with a warning, as are pods that
// no node could host even when the cluster is empty.
func LoadTrace(path string, c *Cluster) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("opening pod csv: %w", err)
	}
	defer func() { _ = f.Close() }()
	return ReadTrace(path, f, c)
}

// ReadTrace is LoadTrace over a reader; name is used in messages and to
// derive the trace name.
func ReadTrace(name string, rd io.Reader, c *Cluster) (*Trace, error) {
	t, err := openCSV(name, rd, []string{"name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli"})
	if err != nil {
		return nil, err
	}
	_, hasSpec := t.header["gpu_spec"]
	tr := &Trace{Name: TraceName(name), File: name}
	seen := map[string]int{}
	err = t.rows(&tr.Issues, func(line int, rec []string) {
		p := Pod{Name: t.get(rec, "name"), Line: line}
		if p.Name == "" {
			tr.Issues.skip(name, line, "column name: empty pod name")
			return
		}
		if first, dup := seen[p.Name]; dup {
			tr.Issues.skip(name, line, "duplicate pod %q (first on line %d)", p.Name, first)
			return
		}
		var k int64
		for _, fld := range []struct {
			col string
			dst *int64
		}{{"cpu_milli", &p.CPU}, {"memory_mib", &p.Memory}, {"num_gpu", &k}} {
			v, err := t.intField(rec, fld.col)
			if err != nil {
				tr.Issues.skip(name, line, "pod %s: %v", p.Name, err)
				return
			}
			*fld.dst = v
		}
		// gpu_milli may be any integer: values <= 0 mean no GPU share and
		// values above 1000 are clamped, as in the protocol.
		gs := t.get(rec, "gpu_milli")
		g, err := strconv.ParseInt(gs, 10, 64)
		if err != nil {
			tr.Issues.skip(name, line, "pod %s: column gpu_milli: %q is not an integer", p.Name, gs)
			return
		}
		if k > 1<<16 {
			tr.Issues.skip(name, line, "pod %s: column num_gpu: %d GPUs is not plausible", p.Name, k)
			return
		}
		if k > 0 {
			p.K, p.G = int(k), min(max(g, 0), MilliPerGPU)
			if p.G == 0 {
				tr.Issues.warn(name, line, "pod %s: num_gpu is %d but gpu_milli is %s: treated as a pod without GPUs", p.Name, k, gs)
				p.K = 0
			}
		}
		if hasSpec {
			p.Spec = t.get(rec, "gpu_spec")
			if strings.EqualFold(p.Spec, "nan") {
				p.Spec = ""
			}
		}
		if p.Spec != "" {
			var unknown []string
			named := false
			for tok := range strings.SplitSeq(p.Spec, "|") {
				if tok == "" {
					continue
				}
				named = true
				id, ok := c.modelID(tok)
				if !ok {
					unknown = append(unknown, strconv.Quote(tok))
					continue
				}
				if p.Allowed == nil {
					p.Allowed = make([]bool, len(c.Models))
				}
				p.Allowed[id] = true
			}
			if named && p.Allowed == nil {
				p.Allowed = make([]bool, len(c.Models)) // only unknown models: no node matches
			}
			if len(unknown) > 0 {
				tr.Issues.warn(name, line, "pod %s: gpu_spec %q: unknown gpu model %s (the nodes have %s)",
					p.Name, p.Spec, strings.Join(unknown, ", "), strings.Join(c.Models, ", "))
			}
		}
		if why := unplaceable(c, &p); why != "" {
			tr.Issues.warn(name, line, "pod %s fits no node even in an empty cluster: %s", p.Name, why)
		}
		seen[p.Name] = line
		tr.Pods = append(tr.Pods, p)
	})
	if err != nil {
		return nil, err
	}
	if len(tr.Pods) == 0 {
		return nil, fmt.Errorf("%s: no valid pod rows", name)
	}
	sort.SliceStable(tr.Pods, func(i, j int) bool { return tr.Pods[i].Name < tr.Pods[j].Name })
	classes := map[[3]int64]int{}
	for i := range tr.Pods {
		p := &tr.Pods[i]
		key := [3]int64{p.CPU, int64(p.K), p.G}
		id, ok := classes[key]
		if !ok {
			id = len(classes)
			classes[key] = id
		}
		p.Class = id
	}
	tr.Classes = len(classes)
	tr.Target = NewTargetWorkload(tr.Pods, DefaultPopularity)
	return tr, nil
}

// unplaceable says why no node of an empty cluster c could host p, or "".
func unplaceable(c *Cluster, p *Pod) string {
	for i := range c.Nodes {
		n := &c.Nodes[i]
		if p.CPU > n.CPU || p.Memory > n.Memory {
			continue
		}
		if p.G > 0 && (n.ModelID < 0 || !p.AllowsModel(n.ModelID) || p.K > n.GPUs) {
			continue
		}
		return ""
	}
	return fmt.Sprintf("no node has cpu_milli >= %d, memory_mib >= %d and %d GPUs of a model allowed by gpu_spec %q",
		p.CPU, p.Memory, p.K, p.Spec)
}
