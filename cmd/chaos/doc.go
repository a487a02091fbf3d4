// Package chaos is the fault-injection suite: its tests (TestChaos…) build
// the gateway binary once, run it in sandbox mode as a child process, and
// break it on purpose (kill -9, network faults from the simulator, bad
// input, racing calls, SIGTERM under load), then check that nothing was
// lost or left half-made.
//
// By default (CHAOS unset) each test runs a short version that fits in
// `go test ./...`; CHAOS=full runs the sizes of the issue (`make chaos`).
// CHAOS_SEED fixes the random choices; each test logs the seed it used.
package chaos
