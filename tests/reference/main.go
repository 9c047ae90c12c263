// Command reference answers, for the Rust tests, how the Go libraries Kubernetes
// itself uses read a value: robfig/cron v3 as the CronJob API and controller read a
// schedule, apimachinery's resource.ParseQuantity, and sigs.k8s.io/yaml as kubectl
// reads a file. Each input line is a JSON string; each output line is one JSON
// object. The Rust side keeps its own parsers; this is only the yardstick.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	"k8s.io/apimachinery/pkg/api/resource"
	"sigs.k8s.io/yaml"
)

type answer struct {
	Input string   `json:"input"`
	Error string   `json:"error,omitempty"`
	Next  []string `json:"next,omitempty"`
	Value string   `json:"value,omitempty"`
	Nanos string   `json:"nanos,omitempty"`
}

// cronAnswer parses as k8s.io/kubernetes pkg/apis/batch/validation does on create
// (ParseStandard, then no "TZ" anywhere) and lists the next fire times in UTC.
func cronAnswer(schedule string, from time.Time) answer {
	a := answer{Input: schedule}
	sched, err := parse(schedule)
	if err != nil {
		a.Error = err.Error()
		return a
	}
	if strings.Contains(schedule, "TZ") {
		a.Error = "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"
		return a
	}
	if _, every := sched.(cron.ConstantDelaySchedule); every {
		a.Value = sched.(cron.ConstantDelaySchedule).Delay.String()
		return a
	}
	t := from
	for i := 0; i < 5; i++ {
		t = sched.Next(t)
		if t.IsZero() {
			break
		}
		a.Next = append(a.Next, t.UTC().Format(time.RFC3339))
	}
	return a
}

func parse(schedule string) (s cron.Schedule, err error) {
	defer func() {
		if r := recover(); r != nil {
			s, err = nil, fmt.Errorf("invalid schedule format: %v", r)
		}
	}()
	return cron.ParseStandard(schedule)
}

func quantityAnswer(text string) answer {
	a := answer{Input: text}
	// As the API server decodes a JSON string into a Quantity.
	q, err := resource.ParseQuantity(strings.TrimSpace(text))
	if err != nil {
		a.Error = err.Error()
		return a
	}
	a.Value = q.String()
	nanos := q.AsDec()
	nanos.SetScale(nanos.Scale() - 9)
	a.Nanos = nanos.String()
	return a
}

func yamlAnswer(text string) answer {
	a := answer{Input: text}
	out, err := yaml.YAMLToJSON([]byte(text))
	if err != nil {
		a.Error = err.Error()
		return a
	}
	a.Value = string(out)
	return a
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: reference cron|quantity|yaml < JSON strings, one per line")
		os.Exit(2)
	}
	from := time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<26)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var text string
		if err := json.Unmarshal(in.Bytes(), &text); err != nil {
			fmt.Fprintln(os.Stderr, "input line is not a JSON string:", err)
			os.Exit(2)
		}
		var a answer
		switch os.Args[1] {
		case "cron":
			a = cronAnswer(text, from)
		case "quantity":
			a = quantityAnswer(text)
		case "yaml":
			a = yamlAnswer(text)
		default:
			fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
			os.Exit(2)
		}
		if err := out.Encode(a); err != nil {
			os.Exit(1)
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
