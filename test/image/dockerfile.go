// Package image checks what can be checked of Tessera's container images on
// a machine that cannot pull their base images: it reads the runtime stages of
// the repository's Dockerfile, assembles each image's root filesystem from
// the files the image will hold (the binary at its COPY destination and the
// shared libraries it loads, all of which the distroless base ships, plus the
// base's /etc/passwd and /etc/group) and runs the ENTRYPOINT in it with
// chroot, as the stage's USER, with only the stage's ENV. It must not build
// or pull images; `make image` does that where a registry is reachable.
package image

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
)

// stage is one runtime stage of the Dockerfile: what the image holds and how
// it runs.
type stage struct {
	Name string
	// Copies maps a COPY --from=build source to its destination in the image.
	Copies map[string]string
	// Env is the stage's ENV, in order, as KEY=VALUE.
	Env []string
	// User is the USER instruction ("0:0", "65532:65532").
	User string
	// Entrypoint is the exec-form ENTRYPOINT.
	Entrypoint []string
}

// parseDockerfile reads the stages of the Dockerfile at path that copy from
// the build stage. It understands the instructions the file uses and fails on
// a form it does not (a shell-form ENTRYPOINT, an ENV without "=").
func parseDockerfile(path string) (map[string]*stage, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	cont := ""
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(l, "#") || (l == "" && cont == "") {
			continue
		}
		if strings.HasSuffix(l, `\`) {
			cont += strings.TrimSuffix(l, `\`) + " "
			continue
		}
		lines = append(lines, cont+l)
		cont = ""
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	stages := map[string]*stage{}
	var cur *stage
	for i, l := range lines {
		instr, rest, _ := strings.Cut(l, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			cur = nil
			f := strings.Fields(rest)
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				cur = &stage{Name: f[2], Copies: map[string]string{}}
				stages[f[2]] = cur
			}
		case "COPY":
			f := strings.Fields(rest)
			if cur != nil && len(f) == 3 && f[0] == "--from=build" {
				cur.Copies[f[1]] = f[2]
			}
		case "ENV":
			if cur == nil {
				continue
			}
			for _, kv := range strings.Fields(rest) {
				if !strings.Contains(kv, "=") {
					return nil, fmt.Errorf("%s: instruction %d: ENV %q is not KEY=VALUE", path, i+1, kv)
				}
				cur.Env = append(cur.Env, kv)
			}
		case "USER":
			if cur != nil {
				cur.User = rest
			}
		case "ENTRYPOINT":
			if cur == nil {
				continue
			}
			if err := json.Unmarshal([]byte(rest), &cur.Entrypoint); err != nil {
				return nil, fmt.Errorf("%s: instruction %d: ENTRYPOINT must be the exec form [\"...\"]: %w", path, i+1, err)
			}
		}
	}
	for name, s := range stages {
		if len(s.Copies) == 0 {
			delete(stages, name) // the build stage itself
		}
	}
	return stages, nil
}
