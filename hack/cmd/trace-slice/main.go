// Command trace-slice cuts a small, self-contained excerpt of an openb trace
// for tests that cannot carry the whole dataset: every k-th node row of the
// node list and every k-th pod row of one pod list (in file order, which is
// name order), keeping only the columns the replay reads. A replay of the
// excerpt at the protocol's 130 % is the same trace on a cluster k times
// smaller. `hack/update-replay-slice.sh` runs it for test/replaysched.
package main

import (
	"encoding/csv"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

func main() {
	nodes := flag.String("nodes", "", "openb node csv (openb_node_list_gpu_node.csv)")
	pods := flag.String("pods", "", "openb pod csv (openb_pod_list_default.csv)")
	out := flag.String("out", "", "output directory (gets files of the same names)")
	every := flag.Int("every", 5, "keep every k-th row")
	flag.Parse()
	if *nodes == "" || *pods == "" || *out == "" || *every < 1 {
		fmt.Fprintln(os.Stderr, "usage: trace-slice -nodes FILE -pods FILE -out DIR [-every K]")
		os.Exit(2)
	}
	for _, f := range []struct {
		path string
		cols []string
	}{
		{*nodes, []string{"sn", "cpu_milli", "memory_mib", "gpu", "model"}},
		{*pods, []string{"name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli", "gpu_spec"}},
	} {
		if err := cut(f.path, filepath.Join(*out, filepath.Base(f.path)), f.cols, *every); err != nil {
			fmt.Fprintln(os.Stderr, "trace-slice:", err)
			os.Exit(1)
		}
	}
}

// cut writes every k-th data row of src, columns cols only, to dst.
func cut(src, dst string, cols []string, k int) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer func() { _ = in.Close() }()
	r := csv.NewReader(in)
	head, err := r.Read()
	if err != nil {
		return fmt.Errorf("reading header of %s: %w", src, err)
	}
	idx := make([]int, len(cols))
	for i, c := range cols {
		idx[i] = -1
		for j, h := range head {
			if h == c {
				idx[i] = j
			}
		}
		if idx[i] < 0 {
			return fmt.Errorf("%s has no column %s", src, c)
		}
	}
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	if err := w.Write(cols); err != nil {
		return err
	}
	for n := 0; ; n++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", src, err)
		}
		if n%k != 0 {
			continue
		}
		row := make([]string, len(idx))
		for i, j := range idx {
			row[i] = rec[j]
		}
		if err := w.Write(row); err != nil {
			return err
		}
	}
	w.Flush()
	if err := w.Error(); err != nil {
		return fmt.Errorf("writing %s: %w", dst, err)
	}
	return f.Close()
}
