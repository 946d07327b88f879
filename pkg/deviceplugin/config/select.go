package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// NodeLabel is the node label that names a node's configuration, as with
// NVIDIA's plugin.
const NodeLabel = "nvidia.com/device-plugin.config"

// fileSuffixes are the extensions a config file may carry besides its bare name.
var fileSuffixes = []string{".yaml", ".yml", ".json"}

// Select picks a node's configuration file from dir, a mounted ConfigMap
// directory whose keys are file names, as NVIDIA's config manager does:
//
//   - labelValue (the value of NodeLabel) names the config: the file
//     <dir>/<name>, else <dir>/<name>.yaml (.yml, .json);
//   - an empty labelValue selects defaultName;
//   - with neither, the only file in dir is selected when there is exactly
//     one; with no file (or dir == "") name and path are empty and the caller
//     uses Default();
//   - a name with no file is an error that lists the names available.
//
// Hidden entries (the ConfigMap's ..data and timestamped directories) are not
// configs.
func Select(dir, labelValue, defaultName string) (name, path string, err error) {
	name, source := labelValue, "node label "+NodeLabel
	if name == "" {
		name, source = defaultName, "default config"
	}
	if dir == "" {
		if name == "" {
			return "", "", nil
		}
		return "", "", fmt.Errorf("%s names config %q, but no config directory is given", source, name)
	}
	available, files, err := listConfigs(dir)
	if err != nil {
		return "", "", err
	}
	if name == "" {
		switch len(available) {
		case 0:
			return "", "", nil
		case 1:
			return available[0], files[available[0]], nil
		default:
			return "", "", fmt.Errorf("no config selected: node label %s is not set, no default config is given, and config directory %s holds several (%s)",
				NodeLabel, dir, strings.Join(available, ", "))
		}
	}
	if strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
		return "", "", fmt.Errorf("%s names config %q, which is not a file name (available: %s)", source, name, availableList(available))
	}
	if path, ok := lookup(files, name); ok {
		return name, path, nil
	}
	return "", "", fmt.Errorf("%s names config %q, which is not in config directory %s (available: %s)", source, name, dir, availableList(available))
}

func availableList(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

// listConfigs returns the file names in dir, sorted, and the path of each.
func listConfigs(dir string) ([]string, map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("reading config directory: %w", err)
	}
	var names []string
	files := map[string]string{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(dir, e.Name())
		// ConfigMap keys are symbolic links into ..data; follow them.
		info, err := os.Stat(path)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // a dangling link while the kubelet swaps ..data
			}
			return nil, nil, fmt.Errorf("reading config directory: %w", err)
		}
		if info.IsDir() {
			continue
		}
		names = append(names, e.Name())
		files[e.Name()] = path
	}
	slices.Sort(names)
	return names, files, nil
}

// lookup finds the file of a config name: the file of that name, else the
// name with one of fileSuffixes.
func lookup(files map[string]string, name string) (string, bool) {
	if path, ok := files[name]; ok {
		return path, true
	}
	for _, suffix := range fileSuffixes {
		if path, ok := files[name+suffix]; ok {
			return path, true
		}
	}
	return "", false
}

// Load selects a node's configuration with Select and parses it. With no
// file selected it returns Default() and an empty name. Errors name the
// config and its file.
func Load(dir, labelValue, defaultName string) (*Config, string, error) {
	name, path, err := Select(dir, labelValue, defaultName)
	if err != nil {
		return nil, "", fmt.Errorf("selecting device plugin config: %w", err)
	}
	if path == "" {
		return Default(), "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, "", fmt.Errorf("reading device plugin config %q: %w", name, err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, "", fmt.Errorf("device plugin config %q (%s): %w", name, path, err)
	}
	return c, name, nil
}
