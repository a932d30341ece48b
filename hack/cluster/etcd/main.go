// Command etcd is a minimal wrapper around etcdmain.Main: etcd's own main module
// (go.etcd.io/etcd/v3) carries replace directives, so `go install` of it refuses.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
