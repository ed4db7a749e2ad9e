// compose-check loads docker-compose.yml with the compose-spec loader that `docker compose
// config` uses (github.com/compose-spec/compose-go/v2): interpolation, merge keys, anchors,
// `.env`, schema validation and normalisation. It fails with the loader's error, or prints the
// resolved project as JSON for scripts/compose-run.py, which runs the project's own services
// natively with exactly these commands and environments.
//
// Usage: compose-check [-f docker-compose.yml]
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	file := flag.String("f", "docker-compose.yml", "the compose file to load")
	flag.Parse()
	if err := run(*file); err != nil {
		fmt.Fprintf(os.Stderr, "compose-check: %s: %v\n", *file, err)
		os.Exit(1)
	}
}

func run(file string) error {
	abs, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	opts, err := cli.NewProjectOptions(
		[]string{abs},
		cli.WithWorkingDirectory(filepath.Dir(abs)),
		cli.WithOsEnv,
		cli.WithDotEnv,
		cli.WithInterpolation(true),
		cli.WithNormalization(true),
		cli.WithResolvedPaths(true),
	)
	if err != nil {
		return err
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		return err
	}
	out, err := project.MarshalJSON()
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}
