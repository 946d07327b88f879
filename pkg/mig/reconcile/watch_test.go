package reconcile

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func nodeAt(rv string, labels map[string]string) *v1.Node {
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n", ResourceVersion: rv, Labels: labels}}
}

// TestRetryDetection tells the operator's writes of the state label from the
// agent's own, however the watch delivers them.
func TestRetryDetection(t *testing.T) {
	state := func(v string) map[string]string { return map[string]string{MIGStateLabel: v} }
	none := map[string]string{}
	tests := []struct {
		name      string
		ours      []string // resourceVersions the agent wrote
		written   string   // the value the agent wrote last ("" = never wrote)
		old, new  *v1.Node
		wantRetry bool
	}{
		{name: "operator removes failed", written: StateFailed, old: nodeAt("5", state(StateFailed)), new: nodeAt("6", none), wantRetry: true},
		{name: "operator sets another value", written: StateFailed, old: nodeAt("5", state(StateFailed)), new: nodeAt("6", state("retry")), wantRetry: true},
		{name: "operator sets pending", written: StateFailed, old: nodeAt("5", state(StateFailed)), new: nodeAt("6", state(StatePending)), wantRetry: true},
		{name: "operator removes a state the agent never wrote", old: nodeAt("5", state(StateFailed)), new: nodeAt("6", none), wantRetry: true},
		{name: "the agent's own write", ours: []string{"6"}, written: StatePending, old: nodeAt("5", none), new: nodeAt("6", state(StatePending))},
		{name: "the agent's earlier write seen after its later one", ours: []string{"6", "7"}, written: StateSuccess, old: nodeAt("5", none), new: nodeAt("6", state(StatePending))},
		{name: "other fields change", written: StatePending, old: nodeAt("6", state(StatePending)), new: nodeAt("7", state(StatePending))},
		{name: "relist merges the agent's writes", written: StateSuccess, old: nodeAt("5", state(StatePending)), new: nodeAt("9", state(StateSuccess))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := newNodeWatch(nil, "n", nil)
			for _, rv := range tt.ours {
				w.ours[rv] = true
			}
			if tt.written != "" {
				w.written[MIGStateLabel], w.wrote[MIGStateLabel] = tt.written, true
			}
			w.update(tt.old, tt.new)
			if got := w.takeRetry(MIGStateLabel); got != tt.wantRetry {
				t.Errorf("retry = %v, want %v", got, tt.wantRetry)
			}
			if w.ours[tt.new.ResourceVersion] {
				t.Errorf("resourceVersion %s still expected after its event", tt.new.ResourceVersion)
			}
			if w.takeRetry(SharingStateLabel) {
				t.Error("a MIG state change asked for a sharing retry")
			}
			select {
			case <-w.changed:
			default:
				t.Error("an update did not wake the loop")
			}
		})
	}
}
