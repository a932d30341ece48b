// Command egress-proxy is the kube-apiserver's way into the real node's network namespace
// (hack/cluster/node). The API server runs on the host and reaches kubelets, pods and Services
// through its "cluster" egress selector: an HTTP CONNECT request over a Unix socket. This proxy
// runs inside the node's namespace, listens on that Unix socket (sockets live on the shared
// filesystem, not in a network namespace) and dials the requested address from inside, so pod
// and node addresses never have to exist on the host. Only destinations inside the --allow
// CIDRs are dialled; anything else is refused with 403.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"
)

func main() {
	socket := flag.String("socket", "", "Unix socket to listen on (required)")
	allow := flag.String("allow", "", "comma-separated CIDRs the proxy may dial (required)")
	flag.Parse()
	if *socket == "" || *allow == "" {
		log.Fatal("usage: egress-proxy --socket PATH --allow CIDR[,CIDR...]")
	}
	var nets []*net.IPNet
	for _, c := range strings.Split(*allow, ",") {
		_, n, err := net.ParseCIDR(strings.TrimSpace(c))
		if err != nil {
			log.Fatalf("--allow: %q is not a CIDR: %v", c, err)
		}
		nets = append(nets, n)
	}
	_ = os.Remove(*socket)
	ln, err := net.Listen("unix", *socket)
	if err != nil {
		log.Fatalf("listen on %s: %v", *socket, err)
	}
	if err := os.Chmod(*socket, 0o600); err != nil {
		log.Fatalf("chmod %s: %v", *socket, err)
	}
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		_ = ln.Close()
	}()
	log.Printf("egress-proxy: listening on %s, dialling only %s", *socket, *allow)
	for {
		conn, err := ln.Accept()
		if err != nil {
			if strings.Contains(err.Error(), "use of closed network connection") {
				_ = os.Remove(*socket)
				return
			}
			log.Printf("accept: %v", err)
			continue
		}
		go serve(conn, nets)
	}
}

// allowed reports whether host:port names an IP inside one of nets (names are not resolved).
func allowed(hostport string, nets []*net.IPNet) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	if ip == nil {
		return false
	}
	for _, n := range nets {
		if n.Contains(ip) {
			return true
		}
	}
	return false
}

func serve(client net.Conn, nets []*net.IPNet) {
	defer client.Close()
	_ = client.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(client)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	if req.Method != http.MethodConnect {
		fmt.Fprintf(client, "HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
		return
	}
	if !allowed(req.Host, nets) {
		log.Printf("refused CONNECT %s: not inside the allowed CIDRs", req.Host)
		fmt.Fprintf(client, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")
		return
	}
	upstream, err := net.DialTimeout("tcp", req.Host, 10*time.Second)
	if err != nil {
		log.Printf("CONNECT %s: %v", req.Host, err)
		fmt.Fprintf(client, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	defer upstream.Close()
	_ = client.SetReadDeadline(time.Time{})
	if _, err := fmt.Fprintf(client, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { // client -> upstream, including bytes already buffered by the request reader
		defer wg.Done()
		_, _ = io.Copy(upstream, br)
		if tc, ok := upstream.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(client, upstream)
		if uc, ok := client.(*net.UnixConn); ok {
			_ = uc.CloseWrite()
		}
	}()
	wg.Wait()
}
