//go:build tools

// Package tools pins kube-router, which the node of the test bed runs for its
// NetworkPolicy firewall only (--run-firewall; Services are kube-proxy's, pod
// networking is the bridge CNI plugin's), so that `go mod tidy` keeps its
// dependencies in go.mod/go.sum. testbed.sh builds the command package directly.
package tools

import (
	_ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"
)
