//go:build tools

// Package tools pins the Kubernetes commands the test bed builds (control
// plane, and the node's kubelet, kube-proxy and kube-scheduler), so that
// `go mod tidy` keeps their dependencies in go.mod/go.sum. It is never
// compiled; testbed.sh builds the command packages directly.
package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
)
