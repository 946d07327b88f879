package reconcile

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/klog/v2"

	"github.com/tessera-gpu/tessera/pkg/podresources"
)

// podRef names a pod.
type podRef struct{ namespace, name string }

func (p podRef) String() string { return p.namespace + "/" + p.name }

// supersededError ends a drain whose config the operator replaced.
type supersededError struct{ by string }

func (e *supersededError) Error() string {
	return fmt.Sprintf("superseded by mig config %q", e.by)
}

// evictRetry is how long a refused eviction waits before it is tried again.
const evictRetry = 500 * time.Millisecond

// drain returns once no container holds any of ids, according to the
// kubelet's PodResources API. With the evict policy it evicts the pods that
// hold them first; an eviction a PodDisruptionBudget refuses (429) is tried
// again on every poll. It ends with an error naming the remaining pods when
// ctx ends first.
func (l *loop) drain(ctx context.Context, node *v1.Node, want string, ids []string) error {
	logger := klog.FromContext(ctx)
	evicted := map[podRef]bool{}
	// A refused eviction is tried again after evictRetry, as kubectl drain does.
	nextTry := map[podRef]time.Time{}
	var held []podresources.Holder
	var refreshErr error
	evictErr := map[podRef]error{}
	err := wait.PollUntilContextCancel(ctx, l.cfg.PollInterval, true, func(ctx context.Context) (bool, error) {
		if cur, err := l.watch.node(); err == nil && cur.Labels[MIGConfigLabel] != want {
			return false, &supersededError{by: cur.Labels[MIGConfigLabel]}
		}
		if err := l.cfg.Pods.Refresh(ctx); err != nil {
			refreshErr = fmt.Errorf("reading pod resources from the kubelet: %w", err)
			logger.V(2).Info("Pod resources unavailable; retrying", "err", err)
			return false, nil
		}
		held = holders(l.cfg.Pods, ids)
		if len(held) == 0 {
			return true, nil
		}
		refreshErr = nil
		if l.cfg.Drain != DrainEvict {
			return false, nil
		}
		for _, p := range pods(held) {
			if evicted[p] || l.cfg.Clock.Now().Before(nextTry[p]) {
				continue
			}
			err := l.evict(ctx, p)
			if ctx.Err() != nil {
				break // keep the last answer of the API server as the reason
			}
			nextTry[p] = l.cfg.Clock.Now().Add(evictRetry)
			switch {
			case err == nil || apierrors.IsNotFound(err):
				evicted[p] = true
				delete(evictErr, p)
				l.cfg.Metrics.evicted()
				logger.Info("Evicted pod to free its GPU for the MIG layout change", "pod", klog.KRef(p.namespace, p.name))
				l.recorder.Eventf(node, v1.EventTypeNormal, ReasonMIGEvicting, "evicted pod %s to free its GPU for mig config %q", p, want)
			case apierrors.IsTooManyRequests(err):
				evictErr[p] = fmt.Errorf("evicting pod %s: %w", p, err)
				logger.V(2).Info("Eviction refused by a disruption budget; retrying", "pod", klog.KRef(p.namespace, p.name), "err", err)
			default:
				evictErr[p] = fmt.Errorf("evicting pod %s: %w", p, err)
				logger.Error(err, "Evicting pod; retrying", "pod", klog.KRef(p.namespace, p.name))
			}
		}
		return false, nil
	})
	if err == nil {
		return nil
	}
	if ctx.Err() == nil || !errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	msg := fmt.Sprintf("timed out waiting for pods to release the gpus (drain policy %s)", l.cfg.Drain)
	if len(held) > 0 {
		msg += ": still held by " + describeHolders(held)
	}
	var errs []error
	if refreshErr != nil {
		errs = append(errs, refreshErr)
	}
	for _, p := range pods(held) {
		if e := evictErr[p]; e != nil {
			errs = append(errs, e)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: %w", msg, errors.Join(errs...))
	}
	return fmt.Errorf("%s: %w", msg, err)
}

// evict asks the API server to evict a pod, honouring its disruption
// budgets, without client-go's own retries: a refusal (429 with
// Retry-After) must come back at once, for drain to retry it within its
// timeout and report it.
func (l *loop) evict(ctx context.Context, p podRef) error {
	return l.cfg.Client.EvictPod(ctx, p.namespace, p.name)
}

// holders lists the containers holding any of ids.
func holders(src PodResources, ids []string) []podresources.Holder {
	var out []podresources.Holder
	for _, id := range ids {
		out = append(out, src.Holders(id)...)
	}
	slices.SortFunc(out, func(a, b podresources.Holder) int {
		return strings.Compare(a.Namespace+"/"+a.Pod+"/"+a.Container+"/"+a.DeviceID, b.Namespace+"/"+b.Pod+"/"+b.Container+"/"+b.DeviceID)
	})
	return slices.Compact(out)
}

// pods lists the distinct pods among holders.
func pods(hs []podresources.Holder) []podRef {
	var out []podRef
	for _, h := range hs {
		p := podRef{h.Namespace, h.Pod}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}

func describeHolders(hs []podresources.Holder) string {
	var parts []string
	for _, h := range hs {
		parts = append(parts, fmt.Sprintf("pod %s/%s container %s (%s %s)", h.Namespace, h.Pod, h.Container, h.Resource, h.DeviceID))
	}
	const most = 5
	if len(parts) > most {
		parts = append(parts[:most], fmt.Sprintf("and %d more", len(parts)-most))
	}
	return strings.Join(parts, ", ")
}
