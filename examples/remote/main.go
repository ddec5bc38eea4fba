// Command remote shows the remote-only Go SDK (package client): it talks to a
// ds-sandbox server and links none of the embedded mode (no manager,
// backends or engines). Start a server first (`ds-sandbox serve`), then:
//
//	DS_SANDBOX_URL=http://127.0.0.1:8000 DS_SANDBOX_API_KEY=… go run ./examples/remote
package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/ds-sandbox/ds-sandbox/client"
)

func main() {
	url := os.Getenv(client.URLEnv)
	if url == "" {
		log.Fatalf("set %s to the address of a ds-sandbox server (ds-sandbox serve)", client.URLEnv)
	}
	c, err := client.NewClient(url, os.Getenv(client.APIKeyEnv))
	if err != nil {
		log.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	sbx, err := c.Create(ctx, client.Options{})
	if err != nil {
		log.Fatal(err)
	}
	exec, err := sbx.RunCode(ctx, "x = 41\nx + 1")
	if err == nil && exec.Error != nil {
		err = fmt.Errorf("%s: %s", exec.Error.Name, exec.Error.Value)
	}
	if kerr := sbx.Kill(context.Background()); err == nil {
		err = kerr
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("x + 1 =", exec.Text())
}
