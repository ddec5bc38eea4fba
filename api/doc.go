// Package api holds the wire types of ds-sandbox: the JSON requests, responses and
// stream events spoken between the SDK, the daemon and the in-sandbox agent, and the
// stable error codes with their Go sentinels.
//
// It imports nothing but the standard library, so every other package (and every
// client) can depend on it without pulling in the rest of the project.
package api
