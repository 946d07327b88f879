package scoring

// DropCaches exposes NodeCache.dropCaches to the benchmarks.
func DropCaches(n *NodeCache) { n.dropCaches() }
