// Package testkit is what the project's tests share: a real mosquitto on a
// free port, the meshingest executable built once per test binary, and the
// small helpers (free ports, polling a condition against a deadline) that
// tests would otherwise each write again. Only tests import it; the product
// binary never links it.
package testkit
