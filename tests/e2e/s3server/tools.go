//go:build tools

// Package tools pins the S3-compatible server the test bed builds (versitygw,
// posix backend), so that `go mod tidy` keeps its dependencies in go.mod/go.sum.
// It is never compiled; testbed.sh builds the command package directly.
package tools

import (
	_ "github.com/versity/versitygw/cmd/versitygw"
)
