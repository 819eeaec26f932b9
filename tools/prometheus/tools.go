//go:build tools

// Package tools pins the Prometheus release whose prometheus and promtool
// binaries the monitoring tests run ("current" in the version matrix).
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/prometheus"
	_ "github.com/prometheus/prometheus/cmd/promtool"
)
