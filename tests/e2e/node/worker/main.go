// The stand-in worker: it stands for the user's application (the referral
// service a ReferralSystem's workers run) in the test bed's images, so the e2e
// suite can watch real pods pass real probes. It is not the referral service.
//
// `worker job NAME...` stands for a one-off command of the application (a
// migration, a maintenance task): it prints what it was asked to do and exits 0.
//
// Two client commands let the e2e suite test the network from a pod (Go's own
// resolver reads the pod's resolv.conf; Debian's static busybox cannot resolve
// names for wget or nc): `worker get URL [TRIES]` exits 0 on a 2xx answer, and
// `worker connect HOST:PORT [TRIES]` when a TCP connection opens; each attempt
// gives up after 3 s, and they are a second apart.
//
// Otherwise it ignores its arguments (the workers' args, such as `npm run
// start:jobs`) and serves HTTP on $PORT (default 3000) and $METRICS_PORT
// (default 9090, set by the operator):
//
//	/metrics                Prometheus text: standin_up, standin_http_requests_total
//	/redis/ping             PING the Redis the operator configured (REDIS_HOST,
//	                        REDIS_PORT, REDIS_PASSWORD): 200 "PONG" or 502 and why
//	/env/NAME/sha256        SHA-256 (hex) of the environment variable NAME, never
//	                        its value: shows which Secret value a pod started with
//	anything else           200 "ok", whatever the probe paths are configured to be
package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

var requests atomic.Int64

func main() {
	log.SetFlags(log.LstdFlags | log.LUTC)
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "job":
			log.Printf("stand-in worker: job %q done", os.Args[2:])
			return
		case "get", "connect":
			os.Exit(client(os.Args[1], os.Args[2:]))
		}
	}
	log.Printf("stand-in worker for the user's application; ignoring args %q", os.Args[1:])
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", metrics)
	mux.HandleFunc("/redis/ping", redisPing)
	mux.HandleFunc("/env/", envHash)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		fmt.Fprintln(w, "ok")
	})
	ports := []string{envOr("PORT", "3000")}
	if m := envOr("METRICS_PORT", "9090"); m != ports[0] {
		ports = append(ports, m)
	}
	servers := make([]*http.Server, 0, len(ports))
	for _, port := range ports {
		srv := &http.Server{Addr: ":" + port, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		servers = append(servers, srv)
		go func() {
			log.Printf("listening on :%s", port)
			if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
				log.Fatalf("listen on :%s: %v", port, err)
			}
		}()
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGTERM, syscall.SIGINT)
	sig := <-stop
	log.Printf("%v: shutting down", sig)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		_ = srv.Shutdown(ctx)
	}
}

func client(command string, args []string) int {
	if len(args) == 0 {
		log.Printf("usage: worker %s TARGET [TRIES]", command)
		return 2
	}
	tries := 1
	if len(args) > 1 {
		if _, err := fmt.Sscanf(args[1], "%d", &tries); err != nil || tries < 1 {
			log.Printf("TRIES must be a positive number, not %q", args[1])
			return 2
		}
	}
	for i := 0; i < tries; i++ {
		if i > 0 {
			time.Sleep(time.Second)
		}
		if command == "get" && get(args[0]) == 0 || command == "connect" && connect(args[0]) == 0 {
			return 0
		}
	}
	return 1
}

func get(url string) int {
	client := http.Client{Timeout: 3 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		log.Printf("GET %s: %v", url, err)
		return 1
	}
	defer resp.Body.Close()
	body := make([]byte, 512)
	n, _ := resp.Body.Read(body)
	log.Printf("GET %s: %s %q", url, resp.Status, body[:n])
	if resp.StatusCode/100 != 2 {
		return 1
	}
	return 0
}

func connect(address string) int {
	conn, err := net.DialTimeout("tcp", address, 3*time.Second)
	if err != nil {
		log.Printf("connect %s: %v", address, err)
		return 1
	}
	conn.Close()
	log.Printf("connect %s: open", address)
	return 0
}

func envOr(name, fallback string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return fallback
}

func metrics(w http.ResponseWriter, _ *http.Request) {
	n := requests.Add(1)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4")
	fmt.Fprintf(w, "# HELP standin_up 1 while the stand-in worker runs.\n# TYPE standin_up gauge\nstandin_up 1\n")
	fmt.Fprintf(w, "# HELP standin_http_requests_total HTTP requests served.\n# TYPE standin_http_requests_total counter\n")
	fmt.Fprintf(w, "standin_http_requests_total %d\n", n)
}

func envHash(w http.ResponseWriter, r *http.Request) {
	requests.Add(1)
	name, ok := strings.CutSuffix(strings.TrimPrefix(r.URL.Path, "/env/"), "/sha256")
	value, set := os.LookupEnv(name)
	if !ok || !set {
		http.Error(w, "no such variable", http.StatusNotFound)
		return
	}
	sum := sha256.Sum256([]byte(value))
	fmt.Fprintln(w, hex.EncodeToString(sum[:]))
}

// redisPing speaks just enough RESP for AUTH and PING.
func redisPing(w http.ResponseWriter, _ *http.Request) {
	requests.Add(1)
	addr := net.JoinHostPort(os.Getenv("REDIS_HOST"), envOr("REDIS_PORT", "6379"))
	conn, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		http.Error(w, fmt.Sprintf("connect %s: %v", addr, err), http.StatusBadGateway)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(3 * time.Second))
	reader := bufio.NewReader(conn)
	command := func(args ...string) (string, error) {
		var b strings.Builder
		fmt.Fprintf(&b, "*%d\r\n", len(args))
		for _, a := range args {
			fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
		}
		if _, err := conn.Write([]byte(b.String())); err != nil {
			return "", err
		}
		line, err := reader.ReadString('\n')
		return strings.TrimSpace(line), err
	}
	if password := os.Getenv("REDIS_PASSWORD"); password != "" {
		reply, err := command("AUTH", password)
		if err != nil || reply != "+OK" {
			// The reply is Redis' error line, which never echoes the password.
			http.Error(w, fmt.Sprintf("AUTH at %s: %q %v", addr, reply, err), http.StatusBadGateway)
			return
		}
	}
	reply, err := command("PING")
	if err != nil || reply != "+PONG" {
		http.Error(w, fmt.Sprintf("PING at %s: %q %v", addr, reply, err), http.StatusBadGateway)
		return
	}
	fmt.Fprintln(w, "PONG")
}
