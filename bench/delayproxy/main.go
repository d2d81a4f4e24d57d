// delayproxy forwards TCP connections from 127.0.0.1 to a loopback upstream, delivering every
// chunk `delay` after it arrived, in both directions: a round trip grows by twice the delay
// while throughput and pipelining stay as they are — a CI runner talking to a distant cluster.
//
//	delayproxy -listen 127.0.0.1:0 -upstream 127.0.0.1:6443 -delay 5ms [-lifetime 1h]
//
// It prints the address it listens on, then serves until stdin closes or the lifetime ends.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"time"
)

type chunk struct {
	data []byte
	due  time.Time
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on (loopback only)")
	upstream := flag.String("upstream", "", "loopback address to forward to")
	delay := flag.Duration("delay", 5*time.Millisecond, "added one-way delay")
	lifetime := flag.Duration("lifetime", time.Hour, "stop after this long regardless")
	flag.Parse()
	for _, address := range []string{*listen, *upstream} {
		if !strings.HasPrefix(address, "127.") && !strings.HasPrefix(address, "[::1]") {
			fmt.Fprintln(os.Stderr, "delayproxy: loopback addresses only:", address)
			os.Exit(2)
		}
	}
	listener, err := net.Listen("tcp", *listen)
	if err != nil {
		fmt.Fprintln(os.Stderr, "delayproxy:", err)
		os.Exit(2)
	}
	fmt.Println(listener.Addr().String())
	go func() { _, _ = io.Copy(io.Discard, os.Stdin); os.Exit(0) }()
	go func() { time.Sleep(*lifetime); os.Exit(0) }()
	for {
		conn, err := listener.Accept()
		if err != nil {
			continue
		}
		go serve(conn, *upstream, *delay)
	}
}

func serve(client net.Conn, upstream string, delay time.Duration) {
	server, err := net.Dial("tcp", upstream)
	if err != nil {
		client.Close()
		return
	}
	go pipe(client, server, delay)
	go pipe(server, client, delay)
}

func pipe(from, to net.Conn, delay time.Duration) {
	queue := make(chan chunk, 4096)
	go func() {
		defer close(queue)
		// One read buffer, and each chunk copied out at its own size: a fresh 64 KiB buffer per
		// read made the proxy's garbage collector the largest CPU cost of a bench run, on the
		// cores the API server and the tools under test share.
		buf := make([]byte, 64<<10)
		for {
			n, err := from.Read(buf)
			if n > 0 {
				queue <- chunk{append([]byte(nil), buf[:n]...), time.Now().Add(delay)}
			}
			if err != nil {
				return
			}
		}
	}()
	for c := range queue {
		if wait := time.Until(c.due); wait > 0 {
			time.Sleep(wait)
		}
		if _, err := to.Write(c.data); err != nil {
			break
		}
	}
	if tcp, ok := to.(*net.TCPConn); ok {
		_ = tcp.CloseWrite()
	} else {
		to.Close()
	}
}
