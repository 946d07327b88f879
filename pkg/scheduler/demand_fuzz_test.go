package scheduler

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// FuzzReadPod feeds pod specs (JSON) to the demand parser: it must never
// panic, and what it accepts must be a demand the scoring code can take. The
// seed corpus is testdata/fuzz/FuzzReadPod (run by every `go test`); explore
// with `go test -run '^$' -fuzz FuzzReadPod ./pkg/scheduler`.
func FuzzReadPod(f *testing.F) {
	f.Add(`{"spec":{"containers":[{"name":"c","resources":{"requests":{"nvidia.com/gpu":"8","cpu":"16"}}}]}}`)
	shared := sharedNames("nvidia.com/gpu.shared")
	known := []string{"NVIDIA-H100-80GB-HBM3", "NVIDIA-L40S"}
	f.Fuzz(func(t *testing.T, in string) {
		var pod corev1.Pod
		if err := json.Unmarshal([]byte(in), &pod); err != nil {
			return
		}
		d, err := ReadPod(&pod, shared)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if d.Resource == "" && d.Count != 0 || d.Resource != "" && (d.Count < 1 || d.Count > maxCount) {
			t.Fatalf("resource %q count %d: want 0 without a resource, 1..%d with one", d.Resource, d.Count, maxCount)
		}
		if d.CPU < 0 || d.Memory < 0 {
			t.Fatalf("cpu %d memory %d: want non-negative", d.CPU, d.Memory)
		}
		if d.Interconnect != InterconnectAny && d.Interconnect != InterconnectNVLink {
			t.Fatalf("interconnect %q accepted", d.Interconnect)
		}
		allowed, _, err := d.Products(known)
		if err == nil && allowed != nil && len(allowed) == 0 {
			t.Fatal("Products allows no product without saying why")
		}
	})
}
