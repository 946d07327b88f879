package replaysched

import (
	"cmp"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The agreement the issue asks of a replay through the scheduler.
const (
	// maxRatioDiff is the largest difference, in percentage points, of the
	// allocation ratios at 100 % and 130 % arrived demand.
	maxRatioDiff = 0.1
	// minSameNode is the least share of pods that land on the same node.
	minSameNode = 0.99
)

const (
	schedulerName = "tessera-replay"
	namespace     = "replay"
	priorityClass = "trace-replay"
	// podDeadline bounds the wait for one pod's outcome.
	podDeadline = 2 * time.Minute
)

// slice is the excerpt of the default trace in testdata (README.md there).
const slice = "testdata/openb-default-1in5"

// TestSliceAgrees replays the 1-in-5 excerpt of the default trace (seed
// 42, 130 %: about 2,100 pods on 243 nodes) through the scheduler, with
// opportunistic batching on (the more demanding case).
func TestSliceAgrees(t *testing.T) {
	c := compare(t, filepath.Join(slice, "openb_node_list_gpu_node.csv"), filepath.Join(slice, "openb_pod_list_default.csv"), 42, true)
	c.check(t)
}

// TestTraceAgrees replays one seed of a whole trace through the scheduler
// (`make bench-replay`): TESSERA_REPLAY_TRACES is the directory of the
// openb traces, TESSERA_REPLAY_TRACE the pod list's name (default),
// TESSERA_REPLAY_SEED the seed (42), TESSERA_REPLAY_BATCHING=1 turns
// opportunistic batching on (schedulerConfig) and TESSERA_REPLAY_OUT is
// where the summary and the per-pod comparison go.
func TestTraceAgrees(t *testing.T) {
	dir := os.Getenv("TESSERA_REPLAY_TRACES")
	if dir == "" {
		t.Skip("TESSERA_REPLAY_TRACES is not set: the whole-trace replay runs in make bench-replay")
	}
	name := cmp.Or(os.Getenv("TESSERA_REPLAY_TRACE"), "default")
	seed, err := strconv.ParseInt(cmp.Or(os.Getenv("TESSERA_REPLAY_SEED"), "42"), 10, 64)
	if err != nil {
		t.Fatalf("TESSERA_REPLAY_SEED: %v", err)
	}
	c := compare(t, filepath.Join(dir, "openb_node_list_gpu_node.csv"), filepath.Join(dir, "openb_pod_list_"+name+".csv"), seed,
		os.Getenv("TESSERA_REPLAY_BATCHING") == "1")
	if out := os.Getenv("TESSERA_REPLAY_OUT"); out != "" {
		if err := c.write(out); err != nil {
			t.Fatal(err)
		}
	}
	c.check(t)
}
