package scoring

import (
	"encoding/binary"
	"math"
)

// A node's cached score of a request (NodeCache.memo) is a function of the
// node's hardware, its state and the scorer's epoch, and nothing else that
// tells nodes apart: no name, no position, nothing learned per node. Two
// nodes of the same machine in the same state therefore score the same, and
// a cluster is mostly such nodes — racks of one server model, most of them
// idle or full. When the learned target is refreshed every node's memo goes
// stale at once, and the scheduler then scored each node it ranked afresh
// (at 5,000 nodes, a quarter of PreScore in pkg/scheduler's
// BenchmarkCycle5000Nodes). The shared memo scores each (machine class,
// state, request) once per epoch and copies the result to the other nodes.
//
// Only what is cheap to key exactly is shared: nodes whose GPUs are all
// whole (ModeWhole; at most 64 of them), requests for whole GPUs, feasible
// results (an infeasible one names its node). The state of such a node is
// which GPUs are used and healthy and its free CPU and memory (apply and
// SetHealthy change nothing else); its class is everything scoring reads
// that never changes: the GPUs' products and NUMA nodes and the link
// matrix. TestSharedMemoMatchesFreshScores checks copies against fresh
// scores.

// sharedKey is a node class's state and a request.
type sharedKey struct {
	class, req    int32
	used, healthy uint64
	cpu, mem      int64
}

// sharedScore is a shared memo entry: the part Rank reads and the Result
// (whose losses the nodes copy, never alias).
type sharedScore struct {
	e   memoEntry
	res Result
}

// maxSharedScores bounds the shared memo; past it, it starts over.
const maxSharedScores = 1 << 14

// noClass marks a node whose scores are not shared.
const noClass = -1

// classOf interns the class of a node whose GPUs are all whole, or returns
// noClass.
func (s *Scorer) classOf(n *NodeCache) int32 {
	gs := n.st.GPUs
	if len(gs) == 0 || len(gs) > 64 {
		return noClass
	}
	b := make([]byte, 0, 16+len(gs)*(16+12*len(gs)))
	b = binary.AppendUvarint(b, uint64(len(gs)))
	for i := range gs {
		if gs[i].Mode != ModeWhole {
			return noClass
		}
		b = binary.AppendVarint(b, int64(n.prod[i]))
		b = binary.AppendVarint(b, int64(gs[i].NUMANode))
	}
	// Every field of every link, whether scoring reads it today or not
	// (NVSwitch it does not): a class must never join nodes that differ.
	for _, row := range n.st.Topology.Links {
		for _, l := range row {
			b = binary.AppendVarint(b, int64(l.NVLinks))
			b = binary.AppendVarint(b, int64(l.PCIe))
			b = binary.AppendUvarint(b, boolBit(l.NVSwitch))
		}
	}
	if id, ok := s.classes[string(b)]; ok {
		return id
	}
	if len(s.classes) >= math.MaxInt32 {
		return noClass
	}
	id := int32(len(s.classes))
	s.classes[string(b)] = id
	return id
}

func boolBit(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

// sharedKeyOf is n's shared-memo key for r; ok is false when their scores
// are not shared.
func (n *NodeCache) sharedKeyOf(r *Request) (sharedKey, bool) {
	if n.class == noClass || r.kind != KindWhole {
		return sharedKey{}, false
	}
	k := sharedKey{class: n.class, req: r.id, cpu: n.st.CPUFree, mem: n.st.MemFree}
	for i := range n.st.GPUs {
		g := &n.st.GPUs[i]
		if g.Used {
			k.used |= 1 << i
		}
		if g.Healthy {
			k.healthy |= 1 << i
		}
	}
	return k, true
}

// sharedGet returns the shared score of k in the current epoch.
func (s *Scorer) sharedGet(k sharedKey) (*sharedScore, bool) {
	if s.sharedEpoch != s.epoch {
		return nil, false
	}
	i, ok := s.shared[k]
	if !ok {
		return nil, false
	}
	return &s.sharedScores[i], true
}

// sharedPut shares res, a feasible score of k computed in the current
// epoch.
func (s *Scorer) sharedPut(k sharedKey, e *memoEntry, res *Result) {
	if s.sharedEpoch != s.epoch || len(s.sharedScores) >= maxSharedScores {
		s.sharedDrop()
		s.sharedEpoch = s.epoch
	}
	s.shared[k] = int32(len(s.sharedScores))
	if len(s.sharedScores) < cap(s.sharedScores) {
		s.sharedScores = s.sharedScores[:len(s.sharedScores)+1]
	} else {
		s.sharedScores = append(s.sharedScores, sharedScore{})
	}
	ss := &s.sharedScores[len(s.sharedScores)-1]
	// The entry's losses buffer is reused from an earlier epoch: no node
	// holds it (copyShared copies).
	losses := append(ss.res.losses[:0], res.losses...)
	ss.e, ss.res = *e, *res
	ss.res.losses = losses
}

// sharedDrop empties the shared memo.
func (s *Scorer) sharedDrop() {
	clear(s.shared)
	s.sharedScores = s.sharedScores[:0]
}

// copyShared makes the node's memo entry and Result those of ss, at the
// node's version, with the losses in the node's own buffer.
func (n *NodeCache) copyShared(ss *sharedScore, e *memoEntry, res *Result) {
	losses := append(res.losses[:0], ss.res.losses...)
	*e, *res = ss.e, ss.res
	res.losses = losses
	e.version = n.version
}
