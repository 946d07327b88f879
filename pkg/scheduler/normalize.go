package scheduler

import (
	"math/bits"

	fwk "k8s.io/kube-scheduler/framework"
)

// rankedTop is how many of the best nodes normalize keeps in Tessera's
// exact order: kube-scheduler binds the pod to the node of the highest
// total score (a random one among equal totals), and an opportunistic
// batch places the next pods of the same signature on the next nodes of
// that ranking without scoring again (the batch ends at the first node
// that still fits). Eight covers the batches the openb traces make (at
// most four pods of one signature in a row) with room to spare.
const rankedTop = 8

// normalize maps raw scores onto [MinNodeScore, MaxNodeScore] in place.
//
// The judged nodes (raw score >= 0, a Result.Key, of which only the order
// means anything) are ranked by key, higher first, equal keys by node name
// (a deterministic tie-break: the trace replay's node rank is that order
// when nodes are named by rank). The first gets the top score alone and
// each of the next rankedTop-1 at least one point less than the one
// before, so that the framework's choice, and a batch's, is Tessera's
// first; no node gets more than the linear image of its key on
// [MinNodeScore, top-1] (so the scores keep Tessera's spacing for the
// other plugins of a profile) except that the k-th ranked node (from 0)
// gets at least MinNodeScore+rankedTop-k, and the nodes past the ranked
// ones are below the last ranked one. The top is MaxNodeScore, or one less when a
// node without GPUs is there for a CPU-only pod (noGPUsRaw, which gets
// MaxNodeScore). Other negative markers: neutralRaw gets NeutralScore, a
// node that no longer fits MinNodeScore.
//
// The linear image is computed in 128 bits: keys span 63 bits, and
// (key-lo)·100 overflows int64.
func normalize(scores fwk.NodeScoreList) {
	top := fwk.MaxScore
	lo, hi, judged := int64(0), int64(0), 0
	for _, s := range scores {
		switch {
		case s.Score == noGPUsRaw:
			top = fwk.MaxScore - 1
		case s.Score >= 0:
			if judged == 0 || s.Score < lo {
				lo = s.Score
			}
			if judged == 0 || s.Score > hi {
				hi = s.Score
			}
			judged++
		}
	}
	better := func(a, b int) bool {
		return scores[a].Score > scores[b].Score || scores[a].Score == scores[b].Score && scores[a].Name < scores[b].Name
	}
	// The rankedTop best, in order (insertion into a short sorted list).
	var buf [rankedTop]int
	ranked := buf[:0]
	for i, s := range scores {
		if s.Score < 0 || len(ranked) == rankedTop && !better(i, ranked[rankedTop-1]) {
			continue
		}
		if len(ranked) < rankedTop {
			ranked = append(ranked, i)
		}
		j := len(ranked) - 1
		for ; j > 0 && better(i, ranked[j-1]); j-- {
			ranked[j] = ranked[j-1]
		}
		ranked[j] = i
	}
	linear := func(s int64) int64 {
		if hi == lo {
			return top - 1
		}
		span := uint64(top - 1 - fwk.MinScore)
		h, l := bits.Mul64(uint64(s-lo), span) // s-lo and hi-lo fit in 63 bits
		q, _ := bits.Div64(h, l, uint64(hi-lo))
		return fwk.MinScore + int64(q)
	}
	// Ranked nodes first (their raw keys are needed until all are set);
	// the k-th keeps rankedTop-k points above MinNodeScore, so that the
	// ranked stay strictly ordered and above every other node however
	// far below the best their keys are.
	vals := make([]int64, len(ranked))
	floor := top + 1
	for k, i := range ranked {
		v := top
		if k > 0 {
			v = min(linear(scores[i].Score), floor-1)
		}
		vals[k] = max(v, fwk.MinScore+int64(rankedTop-k))
		floor = vals[k]
	}
	isRanked := func(i int) bool {
		for _, r := range ranked {
			if r == i {
				return true
			}
		}
		return false
	}
	for i := range scores {
		switch s := scores[i].Score; {
		case s == neutralRaw:
			scores[i].Score = NeutralScore
		case s == noGPUsRaw:
			scores[i].Score = fwk.MaxScore
		case s < 0:
			scores[i].Score = fwk.MinScore
		case !isRanked(i):
			scores[i].Score = max(min(linear(s), floor-1), fwk.MinScore)
		}
	}
	for k, i := range ranked {
		scores[i].Score = vals[k]
	}
}
