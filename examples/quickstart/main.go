// Command quickstart shows the Go SDK: a sandbox, stateful cells, rich
// results, files and a command.
package main

import (
	"context"
	"fmt"
	"log"
	"time"

	dssandbox "github.com/ds-sandbox/ds-sandbox"
)

func main() {
	// Lets this program serve the in-sandbox agent itself, so it does not need
	// the ds-sandbox binary on PATH.
	dssandbox.ServeAgentIfChild()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	sbx, err := dssandbox.Create(ctx, dssandbox.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer sbx.Kill(context.Background())

	if _, err := sbx.RunCode(ctx, "x = 41"); err != nil {
		log.Fatal(err)
	}
	exec, err := sbx.RunCode(ctx, "x + 1")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("x + 1 =", exec.Text())

	if _, err := sbx.Files.Write(ctx, "data/numbers.csv", []byte("n\n1\n2\n3\n")); err != nil {
		log.Fatal(err)
	}
	exec, err = sbx.RunCode(ctx, `import pandas as pd
df = pd.read_csv("data/numbers.csv")
df["n"].sum()`)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("sum from pandas =", exec.Text())

	exec, err = sbx.RunCode(ctx, `import matplotlib.pyplot as plt
plt.plot([1, 2, 3], [1, 4, 9]); plt.show()`)
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range exec.Results {
		fmt.Println("result formats:", r.Formats())
	}

	res, err := sbx.Commands.Run(ctx, "ls data && echo $WORKSPACE_OUTPUTS")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("command exit %d, stdout:\n%s", res.ExitCode, res.Stdout)
}
