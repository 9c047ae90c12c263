// CoreDNS for the test bed's cluster DNS, with only the plugins its Corefile
// uses (CoreDNS's own main links all of them, cloud DNS providers included,
// which triples the build for nothing). This is the documented way to build
// CoreDNS with a chosen set of plugins: set dnsserver.Directives, import the
// plugins, call coremain.Run.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/loadbalance"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/loop"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/reload"
)

// directives keeps the order of CoreDNS's own core/dnsserver/zdirectives.go:
// a plugin sees the effects of every plugin after it in this list.
var directives = []string{
	"reload",
	"ready",
	"health",
	"errors",
	"log",
	"loadbalance",
	"cache",
	"kubernetes",
	"loop",
}

func init() {
	dnsserver.Directives = directives
}

func main() {
	coremain.Run()
}
