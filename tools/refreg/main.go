// refreg serves an in-memory OCI registry with the OCI 1.1 referrers API enabled.
//
// It stands in for zot in lading's tests: zot is not served by the Go module proxy these
// machines reach, and go-containerregistry's registry package implements the referrers
// endpoint. Usage: refreg -addr 127.0.0.1:0 -ready-file PATH (the bound address is written to
// PATH once listening, so callers can use port 0).
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"os"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	ready := flag.String("ready-file", "", "file to write the bound address to")
	flag.Parse()

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	if *ready != "" {
		if err := os.WriteFile(*ready, []byte(ln.Addr().String()), 0o644); err != nil {
			log.Fatalf("ready file: %v", err)
		}
	}
	handler := registry.New(registry.WithReferrersSupport(true))
	log.Printf("refreg listening on %s", ln.Addr())
	log.Fatal(http.Serve(ln, handler))
}
