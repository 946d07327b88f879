package gpuaudit

import (
	"os"
	"strconv"
	"testing"
)

func writeFile(path, data string) error { return os.WriteFile(path, []byte(data), 0o644) }

// migMinorsSample is /proc/driver/nvidia-caps/mig-minors as the driver
// writes it (see TestMIGMinorsSample).
const migMinorsSample = "testdata/mig-minors"

func readMIGMinorsSample(t *testing.T) []byte {
	t.Helper()
	data, err := os.ReadFile(migMinorsSample)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// capMinor is the nvidia-caps minor the sample gives capability name
// ("gpu2/gi1/ci0/access").
func capMinor(t *testing.T, name string) uint32 {
	t.Helper()
	for _, c := range parseMIGMinors(readMIGMinorsSample(t)) {
		if capName(c) == name {
			return c.minor
		}
	}
	t.Fatalf("%s has no capability %s", migMinorsSample, name)
	return 0
}

// capName is the capability's name as mig-minors writes it.
func capName(c migCap) string {
	switch c.kind {
	case capGPUInstance:
		return "gpu" + strconv.Itoa(c.gpu) + "/gi" + strconv.Itoa(c.gi) + "/access"
	case capComputeInstance:
		return "gpu" + strconv.Itoa(c.gpu) + "/gi" + strconv.Itoa(c.gi) + "/ci" + strconv.Itoa(c.ci) + "/access"
	}
	return string(c.kind)
}
