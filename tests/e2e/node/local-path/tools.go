//go:build tools

// Package tools pins Rancher's local-path-provisioner, the test bed's dynamic
// PersistentVolume provisioner, so that `go mod tidy` keeps its dependencies in
// go.mod/go.sum. testbed.sh builds the command package directly.
package tools

import (
	_ "github.com/rancher/local-path-provisioner"
)
