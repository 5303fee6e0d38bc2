// compose-check loads a docker compose file with compose-go, the library `docker compose`
// itself uses (schema validation, interpolation, profiles, merge), so the file can be checked
// on machines without a Docker engine or the compose plugin. Besides loading it, it enforces
// the stack's own rules and prints "service image" lines for version checks.
//
// Usage: compose-check FILE
package main

import (
	"context"
	"fmt"
	"os"
	"sort"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check FILE")
		os.Exit(2)
	}
	opts, err := cli.NewProjectOptions(
		[]string{os.Args[1]},
		cli.WithOsEnv,
		cli.WithDotEnv,
		// Every profile, so gpu/vllm services are validated too.
		cli.WithProfiles([]string{"*"}),
	)
	if err != nil {
		fail(err)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fail(err)
	}

	var problems []string
	names := make([]string, 0, len(project.Services))
	for name := range project.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		svc := project.Services[name]
		if svc.Image == "" {
			problems = append(problems, name+": no image")
		}
		// Nothing is published beyond loopback.
		for _, p := range svc.Ports {
			if p.Published != "" && p.HostIP != "127.0.0.1" {
				problems = append(problems, fmt.Sprintf("%s: port %s published on %q, not 127.0.0.1", name, p.Published, p.HostIP))
			}
		}
		fmt.Printf("%s %s\n", name, svc.Image)
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "compose-check:", p)
		}
		os.Exit(1)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compose-check:", err)
	os.Exit(1)
}
