// The yardstick the Rust tests compare their parsers with (see main.go): the very
// versions Kubernetes v1.35.4 builds with (tests/e2e/versions.env).
module referral-operator/tests/reference

go 1.25.0

require (
	github.com/robfig/cron/v3 v3.0.1
	k8s.io/apimachinery v0.35.4
	sigs.k8s.io/yaml v1.6.0
)

require (
	github.com/fxamacker/cbor/v2 v2.9.0 // indirect
	github.com/x448/float16 v0.8.4 // indirect
	go.yaml.in/yaml/v2 v2.4.3 // indirect
	gopkg.in/inf.v0 v0.9.1 // indirect
	sigs.k8s.io/json v0.0.0-20250730193827-2d320260d730 // indirect
)
