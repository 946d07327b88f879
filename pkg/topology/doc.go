// Package topology chooses devices from a node's free devices, deterministically:
// the one allocator that both the device plugin (GetPreferredAllocation) and
// the scheduler (modelling a node in Filter, Score and Reserve) call, so that
// both pick the same devices from the same free set.
//
// It owns three choices:
//
//   - whole GPUs (Allocator): the set of k GPUs with the best interconnect,
//     ties broken to keep the best sets intact for the next request, then by
//     lowest positions; and Quality, the comparable rank of a set that the
//     scheduler scores nodes with;
//   - shares (PickShareGPU): the one GPU that serves n time-sliced units,
//     packed (default) or distributed;
//   - MIG slices (PickMIGSlice, PickMIGDevice): the free slice of a profile
//     whose use least fragments what remains of the GPU. Both callers give
//     it the geometry of the slices that exist (SliceGeometry): the
//     scheduler knows no more of a GPU than its GPUNode publishes.
//
// It works on plain values: device positions (indices into gpu.Topology and
// Machine.Devices), the link matrix, NUMA nodes, share counts and MIG
// placements. It must not call NVML, talk to Kubernetes, log, read the clock
// or do any other I/O, and it keeps no state between calls: the same input
// always gives the same output, on any machine, in either binary.
//
// # Ranking whole-GPU sets
//
// Sets of the same size are ranked by, in order:
//
//  1. the weakest pair's NVLink count (higher is better);
//  2. the total NVLink count over all pairs (higher is better);
//  3. the worst pair's PCIe path (PIX < PXB < PHB < NODE < SYS < unknown);
//  4. the number of NUMA nodes spanned (fewer is better).
//
// Among the sets that tie on all four, the allocator simulates the next
// requests: for every look-ahead size m (default 8, 4, 2 and the requested
// size, largest first) it repeatedly takes the best m-set from the GPUs that
// would remain free and records its quality, and it prefers the set whose
// remainder gives the better sequence (compared size by size, largest size
// first, each sequence best set first). Remaining ties go to the set with the
// lowest positions (compared as sorted lists).
//
// # Bounded work
//
// The search is exhaustive when the number of candidate sets,
// C(free - mustInclude, k - mustInclude), is at most the search limit
// (DefaultSearchLimit = 20000, which covers every k on up to 16 GPUs:
// C(16,8) = 12870). It is a branch and bound in lowest-position order that
// drops a partial set as soon as an optimistic bound on its best completion
// (weakest pair, total NVLinks from each GPU's largest link counts, the
// closest worst PCIe path the remaining candidates allow) ranks below the best
// set found, so it visits far fewer sets in practice. Above the limit the
// search is greedy: from every free GPU as a seed (or from mustInclude) it
// adds the GPU that ranks best until the set has k GPUs, O(free² · k²) link
// lookups, and keeps the best result.
//
// Breaking ties costs at most MaxTieCandidates (64) look-aheads; a look-ahead
// runs one search (bounded as above, without tie-breaking) per set it takes,
// and stops as soon as its sequence tells the tie from the best one so far.
// Sets that tie beyond the first 64 found are not considered.
//
// The search allocates nothing but the returned set: candidates are bit
// masks, and its scratch lives on the caller's stack. On a node whose every
// pair of GPUs has the same NVLink count (an NVSwitch fabric, or no NVLink),
// a set's weakest pair and NVLink total follow from its size, so the search
// follows only PCIe paths and NUMA nodes there.
package topology
