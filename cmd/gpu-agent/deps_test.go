package main

import (
	"bufio"
	"bytes"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// forbiddenDeps are packages (and their subpackages) the agent must not
// link: client-go's generated clientset, informers, listers and apply
// configurations link every Kubernetes API group, the discovery client
// links the OpenAPI models, and k8s.io/kubernetes is the scheduler's. Each
// costs the agent megabytes of resident memory (issue 5: RSS ≤ 40 MiB).
var forbiddenDeps = []string{
	"k8s.io/client-go/kubernetes",
	"k8s.io/client-go/informers",
	"k8s.io/client-go/listers",
	"k8s.io/client-go/applyconfigurations",
	"k8s.io/client-go/discovery",
	"k8s.io/kubernetes",
	// client-go's event recorder links strategic merge patches and, through
	// them, the OpenAPI models (3 MiB); pkg/kube's Recorder replaces it.
	"k8s.io/client-go/tools/record",
	"k8s.io/apimachinery/pkg/util/strategicpatch",
}

// importGraph maps each package to the packages it imports, as
// `go list -deps -f '{{.ImportPath}} {{join .Imports " "}}'` prints them.
type importGraph map[string][]string

func parseImportGraph(out []byte) importGraph {
	g := importGraph{}
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 0 {
			g[f[0]] = f[1:]
		}
	}
	return g
}

// isUnder reports whether pkg is one of prefixes or below one.
func isUnder(pkg string, prefixes []string) bool {
	for _, p := range prefixes {
		if pkg == p || strings.HasPrefix(pkg, p+"/") {
			return true
		}
	}
	return false
}

// forbiddenChains returns, for each forbidden package that root reaches
// through packages that are not forbidden themselves, the shortest import
// chain from root to it ("a -> b -> c"), sorted.
func forbiddenChains(g importGraph, root string, forbidden []string) []string {
	parent := map[string]string{root: ""}
	queue := []string{root}
	var chains []string
	for len(queue) > 0 {
		pkg := queue[0]
		queue = queue[1:]
		if isUnder(pkg, forbidden) {
			chain := []string{pkg}
			for p := parent[pkg]; p != ""; p = parent[p] {
				chain = append(chain, p)
			}
			slices.Reverse(chain)
			chains = append(chains, strings.Join(chain, " -> "))
			continue // what it imports in turn is its own problem
		}
		for _, imp := range g[pkg] {
			if _, seen := parent[imp]; !seen {
				parent[imp] = pkg
				queue = append(queue, imp)
			}
		}
	}
	slices.Sort(chains)
	return chains
}

func TestForbiddenChains(t *testing.T) {
	g := parseImportGraph([]byte(`main a b
a k8s.io/client-go/rest
b c k8s.io/client-go/kubernetes
c k8s.io/client-go/informers/core k8s.io/client-go/listersx
k8s.io/client-go/rest
k8s.io/client-go/kubernetes k8s.io/client-go/kubernetes/scheme k8s.io/client-go/discovery
k8s.io/client-go/kubernetes/scheme
k8s.io/client-go/discovery
k8s.io/client-go/informers/core
k8s.io/client-go/listersx
`))
	tests := []struct {
		name string
		root string
		want []string
	}{
		{name: "clean", root: "a"},
		{name: "direct and indirect", root: "main", want: []string{
			"main -> b -> c -> k8s.io/client-go/informers/core",
			"main -> b -> k8s.io/client-go/kubernetes",
		}},
		{name: "a forbidden root", root: "k8s.io/client-go/discovery", want: []string{"k8s.io/client-go/discovery"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := forbiddenChains(g, tt.root, forbiddenDeps); !slices.Equal(got, tt.want) {
				t.Errorf("forbiddenChains(%s) = %q, want %q", tt.root, got, tt.want)
			}
		})
	}
}

// layering lists, for packages of the agent, packages they must not reach
// (directly or through others) although the agent as a whole links them.
var layering = []struct {
	pkg, reason string
	forbidden   []string
}{
	{
		pkg:       "github.com/tessera-gpu/tessera/pkg/telemetry",
		reason:    "telemetry reads health through pkg/gpu's types and the XID catalogue from pkg/gpu/xid, not through the device plugin",
		forbidden: []string{"github.com/tessera-gpu/tessera/pkg/deviceplugin"},
	},
	{
		pkg:       "github.com/tessera-gpu/tessera/pkg/gpu/...",
		reason:    "the machine model is below every consumer",
		forbidden: []string{"github.com/tessera-gpu/tessera/pkg/deviceplugin", "github.com/tessera-gpu/tessera/pkg/telemetry", "github.com/tessera-gpu/tessera/pkg/agent"},
	},
}

// importGraphOf runs go list -deps over patterns and returns the graph and
// the packages the patterns name.
func importGraphOf(t *testing.T, patterns ...string) (importGraph, []string) {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipping: the go command is not on PATH: %v", err)
	}
	self, err := exec.Command(goTool, append([]string{"list"}, patterns...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", patterns, err)
	}
	out, err := exec.Command(goTool, append([]string{"list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`}, patterns...)...).Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok { //nolint:errorlint // exec returns *ExitError directly
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	g := parseImportGraph(out)
	roots := strings.Fields(string(self))
	for _, root := range roots {
		if _, ok := g[root]; !ok {
			t.Fatalf("go list -deps printed nothing for %s", root)
		}
	}
	return g, roots
}

// TestAgentStaysLean fails when the agent links a forbidden package, naming
// the import chain that pulls it in.
func TestAgentStaysLean(t *testing.T) {
	g, roots := importGraphOf(t, ".")
	root := roots[0]
	if len(g[root]) == 0 {
		t.Fatalf("go list -deps printed no imports for %s", root)
	}
	for _, chain := range forbiddenChains(g, root, forbiddenDeps) {
		t.Errorf("the agent links a forbidden package: %s", chain)
	}
}

// TestAgentLayering fails when a package of the agent reaches one it must
// not, naming the import chain.
func TestAgentLayering(t *testing.T) {
	for _, l := range layering {
		t.Run(l.pkg, func(t *testing.T) {
			g, roots := importGraphOf(t, l.pkg)
			for _, root := range roots {
				for _, chain := range forbiddenChains(g, root, l.forbidden) {
					t.Errorf("%s: %s", chain, l.reason)
				}
			}
		})
	}
}
