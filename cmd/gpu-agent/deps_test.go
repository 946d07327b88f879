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

// TestAgentStaysLean fails when the agent links a forbidden package, naming
// the import chain that pulls it in.
func TestAgentStaysLean(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipping: the go command is not on PATH: %v", err)
	}
	self, err := exec.Command(goTool, "list", ".").Output()
	if err != nil {
		t.Fatalf("go list .: %v", err)
	}
	out, err := exec.Command(goTool, "list", "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`, ".").Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok { //nolint:errorlint // exec returns *ExitError directly
			stderr = ee.Stderr
		}
		t.Fatalf("go list -deps: %v\n%s", err, stderr)
	}
	g := parseImportGraph(out)
	root := strings.TrimSpace(string(self))
	if len(g[root]) == 0 {
		t.Fatalf("go list -deps printed no imports for %s", root)
	}
	for _, chain := range forbiddenChains(g, root, forbiddenDeps) {
		t.Errorf("the agent links a forbidden package: %s", chain)
	}
}
