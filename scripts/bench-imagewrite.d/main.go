// Command rangeserver serves one directory over HTTP on 127.0.0.1 with
// Range support (net/http's ServeContent), standing in for the controller's
// image endpoint in scripts/bench-imagewrite. It prints its URL and runs
// until killed.
package main

import (
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
)

func main() {
	dir := flag.String("dir", ".", "directory to serve")
	flag.Parse()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("http://%s/\n", ln.Addr())
	os.Stdout.Sync()
	log.Fatal(http.Serve(ln, http.FileServer(http.Dir(*dir))))
}
