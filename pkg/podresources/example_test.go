package podresources_test

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/tessera-gpu/tessera/pkg/podresources"
)

// A consumer keeps one Cache running and reads it as often as it likes; only
// Run (or Refresh) talks to the kubelet.
func Example() {
	c := podresources.New(podresources.Options{Socket: "/nonexistent/kubelet.sock", Interval: 10 * time.Second})
	if err := c.Register(prometheus.NewRegistry()); err != nil {
		fmt.Println(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a real agent cancels on shutdown; Run refreshes once, then returns
	_ = c.Run(ctx)

	fmt.Println(c.Holders("GPU-0d6b7c9e-0000-4000-8000-000000000000"))
	fmt.Println(c.Status().OK, c.Status().Reason)
	// Output:
	// []
	// false kubelet socket /nonexistent/kubelet.sock not found
}
