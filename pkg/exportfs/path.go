package exportfs

import (
	"fmt"
	"strings"
)

// Length limits, as Linux NAME_MAX and PATH_MAX.
const (
	maxNameLen = 255
	maxPathLen = 4096
)

// splitRel validates rel and returns its segments.
func splitRel(rel string) ([]string, error) {
	switch {
	case rel == "":
		return nil, fmt.Errorf("empty path; the export root itself cannot be used, pass a directory below it: %w", ErrInvalidPath)
	case len(rel) > maxPathLen:
		return nil, fmt.Errorf("path is %d bytes long, more than %d: %w", len(rel), maxPathLen, ErrInvalidPath)
	case strings.IndexByte(rel, 0) >= 0:
		return nil, fmt.Errorf("path contains a NUL byte: %w", ErrInvalidPath)
	case rel[0] == '/':
		return nil, fmt.Errorf("path must be relative to the export root, not start with \"/\": %w", ErrInvalidPath)
	}
	parts := strings.Split(rel, "/")
	for i, p := range parts {
		if err := checkName(p); err != nil {
			return nil, fmt.Errorf("segment %d: %w", i+1, err)
		}
	}
	return parts, nil
}

// checkName validates one path segment, also used for Rename's new name.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty name (leading, trailing or double slash?): %w", ErrInvalidPath)
	case name == "." || name == "..":
		return fmt.Errorf("name %q is not allowed: %w", name, ErrInvalidPath)
	case len(name) > maxNameLen:
		return fmt.Errorf("name is %d bytes long, more than %d: %w", len(name), maxNameLen, ErrInvalidPath)
	case strings.IndexByte(name, 0) >= 0:
		return fmt.Errorf("name contains a NUL byte: %w", ErrInvalidPath)
	case strings.IndexByte(name, '/') >= 0:
		return fmt.Errorf("name %q contains a slash: %w", name, ErrInvalidPath)
	}
	return nil
}
