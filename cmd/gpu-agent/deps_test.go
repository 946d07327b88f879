package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
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
	// gRPC's request tracing (built out by the grpcnotrace tag) serves
	// pages through html/template, whose method lookups by name keep every
	// exported method in the binary (TestAgentKeepsDeadMethodElimination).
	"golang.org/x/net/trace",
	"html/template",
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

// agentTags returns the build tags `make build` builds the agent with (the
// Makefile's AGENT_TAGS).
func agentTags(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "AGENT_TAGS := "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("the Makefile sets no AGENT_TAGS := ...")
	return ""
}

// goTool returns the go command, skipping the test without one.
func goTool(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("skipping: the go command is not on PATH: %v", err)
	}
	return goTool
}

// importGraphOf runs go list -deps over patterns, with the agent's build
// tags, and returns the graph and the packages the patterns name.
func importGraphOf(t *testing.T, patterns ...string) (importGraph, []string) {
	t.Helper()
	goTool := goTool(t)
	tags := "-tags=" + agentTags(t)
	self, err := exec.Command(goTool, append([]string{"list", tags}, patterns...)...).Output()
	if err != nil {
		t.Fatalf("go list %v: %v", patterns, err)
	}
	out, err := exec.Command(goTool, append([]string{"list", tags, "-deps", "-f", `{{.ImportPath}} {{join .Imports " "}}`}, patterns...)...).Output()
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

// reflectMethodChains returns, for each function the linker's dependency
// dump (-ldflags=-dumpdep: "from -> to" lines, "_" the root, flags such as
// " <ReflectMethod>" after a name) reaches that looks methods up by name or
// index through reflect, the chain from the root to it ("a -> b -> c"),
// sorted.
func reflectMethodChains(dump []byte) []string {
	strip := func(s string) (string, bool) {
		name, flags, _ := strings.Cut(strings.TrimSpace(s), " <")
		return name, strings.Contains(flags, "ReflectMethod>")
	}
	parent := map[string]string{}
	var found []string
	sc := bufio.NewScanner(bytes.NewReader(dump))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		from, to, ok := strings.Cut(sc.Text(), " -> ")
		if !ok {
			continue
		}
		f, _ := strip(from)
		to, reflects := strip(to)
		if _, seen := parent[to]; seen {
			continue
		}
		parent[to] = f
		if reflects {
			found = append(found, to)
		}
	}
	var chains []string
	for _, fn := range found {
		chain := []string{fn}
		for p := parent[fn]; p != "" && p != "_" && len(chain) < 64; p = parent[p] {
			chain = append(chain, p)
		}
		slices.Reverse(chain)
		chains = append(chains, strings.Join(chain, " -> "))
	}
	slices.Sort(chains)
	return chains
}

func TestReflectMethodChains(t *testing.T) {
	dump := []byte(`_ -> main.main
main.main -> a.F
a.F -> b.G <ReflectMethod>
type:x <UsedInIface> -> a.F
b.G <ReflectMethod> -> reflect.Value.MethodByName
main.main -> c.H
`)
	want := []string{"main.main -> a.F -> b.G"}
	if got := reflectMethodChains(dump); !slices.Equal(got, want) {
		t.Errorf("reflectMethodChains = %q, want %q", got, want)
	}
	if got := reflectMethodChains([]byte("_ -> main.main\nmain.main -> a.F\n")); len(got) != 0 {
		t.Errorf("reflectMethodChains of a clean dump = %q, want none", got)
	}
}

// TestAgentKeepsDeadMethodElimination links the agent as make build does and
// fails when a reachable function looks methods up by name or index through
// reflect (reflect.Value.MethodByName, reflect.Type.Method, text/template):
// the linker then keeps every exported method of every type the agent uses,
// 7 MB more binary and as much more resident memory (issue 11: RSS <= 40 MiB).
func TestAgentKeepsDeadMethodElimination(t *testing.T) {
	if testing.Short() {
		t.Skip("links the agent binary")
	}
	out := filepath.Join(t.TempDir(), "gpu-agent")
	// go build passes the linker's output on to its own stderr.
	dump, err := exec.Command(goTool(t), "build", "-tags="+agentTags(t), "-ldflags=-dumpdep", "-o", out, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("go build -ldflags=-dumpdep: %v\n%s", err, dump)
	}
	if !bytes.Contains(dump, []byte(" -> main.main")) {
		t.Fatalf("the linker printed no dependency dump (%d bytes of output)", len(dump))
	}
	for _, chain := range reflectMethodChains(dump) {
		t.Errorf("the agent looks methods up through reflect, so every exported method stays linked: %s", chain)
	}
}
