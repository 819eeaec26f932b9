// compose-config loads a compose file with compose-go v2, the library `docker compose`
// (Compose v2) loads and validates compose files with, and prints the normalized model
// as JSON, or the loader's error (exit status 1). It is `docker compose config` without
// a Docker engine or the Docker CLI, for the tests.
//
//	compose-config -f compose.yaml --project-directory . --env-file .env.example --profile '*'
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var files, envFiles, profiles list
	flag.Var(&files, "f", "compose file (repeatable; default compose.yaml in the project directory)")
	flag.Var(&envFiles, "env-file", "env file for interpolation (repeatable)")
	flag.Var(&profiles, "profile", "profile to enable (repeatable; '*' enables every profile)")
	directory := flag.String("project-directory", "", "project directory (default: the first file's directory)")
	name := flag.String("project-name", "tinywindow", "project name")
	osEnv := flag.Bool("os-env", true, "also interpolate from this process's environment (as docker compose does)")
	flag.Parse()
	if flag.NArg() > 0 {
		fail(fmt.Errorf("unexpected arguments: %s", strings.Join(flag.Args(), " ")))
	}

	// In the order `docker compose` applies them: the first to set a variable wins,
	// so the process environment overrides the env files.
	var options []cli.ProjectOptionsFn
	if *directory != "" {
		options = append(options, cli.WithWorkingDirectory(*directory))
	}
	if *osEnv {
		options = append(options, cli.WithOsEnv)
	}
	options = append(options, cli.WithDefaultConfigPath, cli.WithEnvFiles(envFiles...), cli.WithDotEnv,
		cli.WithProfiles(profiles), cli.WithName(*name), cli.WithResolvedPaths(true))
	opts, err := cli.NewProjectOptions(files, options...)
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}
	out, err := json.MarshalIndent(project, "", "  ")
	if err != nil {
		fail(err)
	}
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compose-config:", err)
	os.Exit(1)
}
