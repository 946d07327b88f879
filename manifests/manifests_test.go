// Package manifests holds the deployment manifests; its test decodes every
// manifest strictly into the Kubernetes API types and checks the device-plugin
// configs they ship parse.
package manifests

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"

	"github.com/tessera-gpu/tessera/pkg/deviceplugin/config"
	"github.com/tessera-gpu/tessera/pkg/mig"
)

func TestManifestsDecode(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("base", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests: %v", err)
	}
	migConfigs := 0
	defer func() {
		if migConfigs != 1 {
			t.Errorf("found %d tessera-mig-parted-config ConfigMaps in base/, want 1", migConfigs)
		}
	}()
	decoder := serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			json, err := yaml.YAMLToJSON(doc)
			if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			obj, _, err := decoder.Decode(json, nil, nil)
			if err != nil {
				t.Errorf("%s: %v", f, err)
				continue
			}
			if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == "tessera-device-plugin-configs" {
				for key, value := range cm.Data {
					if _, err := config.Parse([]byte(value)); err != nil {
						t.Errorf("%s: device plugin config %q: %v", f, key, err)
					}
				}
			}
			if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == "tessera-mig-parted-config" {
				migConfigs++
				mf, err := mig.Parse([]byte(cm.Data["config.yaml"]), f+": config.yaml")
				if err != nil {
					t.Errorf("%s: mig-parted config: %v", f, err)
					continue
				}
				// The label values GPU Operator users rely on.
				for _, name := range []string{"all-disabled", "all-enabled", "all-1g.10gb", "all-balanced"} {
					if _, ok := mf.Configs[name]; !ok {
						t.Errorf("%s: mig-parted config lacks %q (has %v)", f, name, mf.Names())
					}
				}
			}
		}
	}
}
