package gpu_test

import (
	"context"
	"slices"
	"testing"

	"github.com/tessera-gpu/tessera/pkg/gpu"
)

// fixedSource delivers its events, then returns.
type fixedSource []gpu.Event

func (s fixedSource) WatchEvents(_ context.Context, handle func(gpu.Event)) error {
	for _, e := range s {
		handle(e)
	}
	return nil
}

func TestTeeEventsObserversRunFirstInOrder(t *testing.T) {
	src := fixedSource{{Kind: gpu.EventXID, XID: 48, Index: 1}, {Kind: gpu.EventGPULost, Index: 2}}
	var got []string
	obs := func(name string) func(gpu.Event) {
		return func(e gpu.Event) { got = append(got, name+":"+e.Kind.String()) }
	}
	err := gpu.TeeEvents(src, obs("a"), obs("b")).WatchEvents(context.Background(), obs("handler"))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"a:xid", "b:xid", "handler:xid", "a:gpu-lost", "b:gpu-lost", "handler:gpu-lost"}
	if !slices.Equal(got, want) {
		t.Errorf("calls = %v, want %v", got, want)
	}
}
