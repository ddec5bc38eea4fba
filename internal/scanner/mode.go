package scanner

import (
	"slices"
	"strings"

	"github.com/ds-sandbox/ds-sandbox/api"
)

// ValidateMode reports whether mode is off, warn or block ("" is allowed: it
// means "unchanged"). The error wraps api.ErrInvalid.
func ValidateMode(mode string) error {
	if mode != "" && !slices.Contains(api.ScannerModes, mode) {
		return api.Errorf(api.ErrInvalid, "scanner_mode %q is not one of %s", mode, strings.Join(api.ScannerModes, ", "))
	}
	return nil
}

// Stricter returns the stricter of two modes (off < warn < block); "" counts
// as the loosest.
func Stricter(a, b string) string {
	if slices.Index(api.ScannerModes, b) > slices.Index(api.ScannerModes, a) {
		return b
	}
	return a
}
