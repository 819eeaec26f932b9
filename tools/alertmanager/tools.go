//go:build tools

// Package tools pins the Alertmanager release whose alertmanager and amtool
// binaries the monitoring tests run ("current" in the version matrix).
package tools

import (
	_ "github.com/prometheus/alertmanager/cmd/alertmanager"
	_ "github.com/prometheus/alertmanager/cmd/amtool"
)
