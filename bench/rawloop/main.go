// rawloop is the floor lading's install is measured against: forced server-side apply of
// every object, N at a time, no dry-run, no inventory, no waiting — nothing but the requests.
//
//	rawloop -server URL -ca CA -cert CERT -key KEY -objects FILE [-concurrency 32]
//
// FILE holds one line per object: the request path, a tab, and the object as JSON.
package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

func main() {
	server := flag.String("server", "", "API server URL")
	ca := flag.String("ca", "", "CA bundle")
	cert := flag.String("cert", "", "client certificate")
	key := flag.String("key", "", "client key")
	objects := flag.String("objects", "", "path<TAB>json per line")
	concurrency := flag.Int("concurrency", 32, "requests in flight")
	flag.Parse()

	pair, err := tls.LoadX509KeyPair(*cert, *key)
	check(err)
	pool := x509.NewCertPool()
	pem, err := os.ReadFile(*ca)
	check(err)
	pool.AppendCertsFromPEM(pem)
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool},
		MaxIdleConnsPerHost: *concurrency,
		ForceAttemptHTTP2:   true,
	}
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}

	file, err := os.Open(*objects)
	check(err)
	var lines []string
	scanner := bufio.NewScanner(file)
	scanner.Buffer(make([]byte, 1<<20), 16<<20)
	for scanner.Scan() {
		lines = append(lines, scanner.Text())
	}
	check(scanner.Err())

	work := make(chan string)
	var failed sync.WaitGroup
	var mu sync.Mutex
	errors := 0
	for i := 0; i < *concurrency; i++ {
		failed.Add(1)
		go func() {
			defer failed.Done()
			for line := range work {
				path, body, _ := strings.Cut(line, "\t")
				url := *server + path + "?fieldManager=rawloop&force=true"
				req, err := http.NewRequest("PATCH", url, bytes.NewBufferString(body))
				check(err)
				req.Header.Set("Content-Type", "application/apply-patch+yaml")
				req.Header.Set("Accept", "application/json")
				resp, err := client.Do(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				if err != nil || resp.StatusCode >= 300 {
					mu.Lock()
					errors++
					mu.Unlock()
				}
			}
		}()
	}
	for _, line := range lines {
		work <- line
	}
	close(work)
	failed.Wait()
	if errors > 0 {
		fmt.Fprintf(os.Stderr, "rawloop: %d of %d requests failed\n", errors, len(lines))
		os.Exit(1)
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, "rawloop:", err)
		os.Exit(2)
	}
}
