package api

import (
	"errors"
	"fmt"
)

// Domain sentinels. Every error that crosses a package boundary wraps one of these
// (fmt.Errorf("sandbox %s: %w", id, api.ErrNotFound)), so callers test with errors.Is
// and the wire layer maps them to one stable code.
var (
	// ErrNotFound: the named sandbox, context, process, file, template, workspace or
	// dataset does not exist.
	ErrNotFound = errors.New("not found")
	// ErrInvalid: the request is malformed or names something impossible.
	ErrInvalid = errors.New("invalid argument")
	// ErrExists: the thing to be created already exists.
	ErrExists = errors.New("already exists")
	// ErrUnsupported: the backend or platform cannot honour the request. Returned
	// instead of silently accepting a setting that would not be enforced.
	ErrUnsupported = errors.New("unsupported")
	// ErrLimit: a count or rate bound was hit (retry later, or free one).
	ErrLimit = errors.New("limit exceeded")
	// ErrTooLarge: a request body, upload or answer is larger than its bound
	// (it wraps ErrLimit).
	ErrTooLarge = fmt.Errorf("too large: %w", ErrLimit)
	// ErrNoSpace: a disk or a workspace's disk quota is full (it wraps
	// ErrLimit).
	ErrNoSpace = fmt.Errorf("insufficient storage: %w", ErrLimit)
	// ErrCancelled: the client went away (or cancelled) before the answer.
	ErrCancelled = errors.New("cancelled")
	// ErrPermission: the caller may not do this (a path outside the sandbox, a bad key).
	ErrPermission = errors.New("permission denied")
	// ErrUnavailable: the sandbox or backend is not (or no longer) running.
	ErrUnavailable = errors.New("unavailable")
	// ErrTimeout: an operation of ours (not user code) ran past its deadline.
	ErrTimeout = errors.New("timeout")
	// ErrUnauthenticated: no valid API key was given.
	ErrUnauthenticated = errors.New("unauthenticated")
)

// Stable error codes, as they appear in Error.Code on the wire.
const (
	CodeNotFound    = "not_found"
	CodeInvalid     = "invalid_argument"
	CodeExists      = "already_exists"
	CodeUnsupported = "unsupported"
	CodeLimit       = "limit_exceeded"
	CodeTooLarge    = "too_large"
	CodeNoSpace     = "insufficient_storage"
	CodeCancelled   = "cancelled"
	CodePermission  = "permission_denied"
	CodeUnavailable = "unavailable"
	CodeTimeout     = "timeout"
	CodeUnauth      = "unauthenticated"
	CodeInternal    = "internal"
)

// codeTable is the one mapping between sentinels and wire codes. A sentinel
// that wraps another (ErrTooLarge wraps ErrLimit) comes before it.
var codeTable = []struct {
	err  error
	code string
}{
	{ErrCancelled, CodeCancelled},
	{ErrTooLarge, CodeTooLarge},
	{ErrNoSpace, CodeNoSpace},
	{ErrNotFound, CodeNotFound},
	{ErrInvalid, CodeInvalid},
	{ErrExists, CodeExists},
	{ErrUnsupported, CodeUnsupported},
	{ErrLimit, CodeLimit},
	{ErrPermission, CodePermission},
	{ErrUnavailable, CodeUnavailable},
	{ErrTimeout, CodeTimeout},
	{ErrUnauthenticated, CodeUnauth},
}

// Error is the one error body of every ds-sandbox HTTP interface.
type Error struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// Error implements error.
func (e *Error) Error() string { return e.Message }

// Unwrap maps the wire code back to its sentinel, so errors.Is(err, ErrNotFound)
// holds on the client side of a connection too.
func (e *Error) Unwrap() error {
	for _, c := range codeTable {
		if c.code == e.Code {
			return c.err
		}
	}
	return nil
}

// CodeOf returns the stable code for err: the code of the first sentinel it wraps,
// or CodeInternal.
func CodeOf(err error) string {
	var ae *Error
	if errors.As(err, &ae) && ae.Code != "" {
		return ae.Code
	}
	for _, c := range codeTable {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return CodeInternal
}

// StatusClientClosed is the status recorded (in metrics and the audit log)
// for a request whose client went away before the answer: nginx's 499. No
// client ever receives it.
const StatusClientClosed = 499

// HTTPStatus is the HTTP status of every ds-sandbox interface for a code.
// Every client mistake is a 4xx: unsupported (a setting this server or
// backend cannot honour) is 422, so 5xx means a failure of ours or of the
// sandbox (internal 500, unavailable 503, timeout 504).
func HTTPStatus(code string) int {
	switch code {
	case CodeNotFound:
		return 404
	case CodeInvalid:
		return 400
	case CodeExists:
		return 409
	case CodeUnsupported:
		return 422
	case CodeLimit:
		return 429
	case CodeTooLarge:
		return 413
	case CodeNoSpace:
		return 507
	case CodeCancelled:
		return StatusClientClosed
	case CodePermission:
		return 403
	case CodeUnavailable:
		return 503
	case CodeTimeout:
		return 504
	case CodeUnauth:
		return 401
	}
	return 500
}

// ErrorFrom converts any error into the wire shape.
func ErrorFrom(err error) *Error {
	return &Error{Code: CodeOf(err), Message: err.Error()}
}

// Errorf is fmt.Errorf that also wraps sentinel: Errorf(ErrInvalid, "code is empty").
func Errorf(sentinel error, format string, args ...any) error {
	return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), sentinel)
}
