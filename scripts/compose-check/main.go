// compose-check loads a docker compose file with compose-go, the library `docker compose`
// itself uses (schema validation, interpolation, profiles, merge), so the file can be checked
// on machines without a Docker engine or the compose plugin. Besides loading it, it enforces
// the stack's own rules and prints "service image" lines for version checks.
//
// Rules, for every service in every profile (docs/stack.md, "Container hardening"):
//   - published ports bind 127.0.0.1 only;
//   - read_only root filesystem, cap_drop ALL, security_opt no-new-privileges, no cap_add,
//     privileged, host network or host pid;
//   - an explicit non-root `user:` (the image's own user, stated so it can be checked);
//   - no secret in the environment: no variable named like a password, token or key unless it
//     names a file (…_FILE, …__FILE, …_PATH), no credentials inside URLs, and every
//     /run/secrets/ path a variable names is a secret the service mounts from a file;
//   - Grafana: anonymous access explicitly off, admin password from a file.
//
// Exceptions are listed below, each with its reason; one that is no longer needed is an
// error too, so the list cannot go stale.
//
// Usage: compose-check FILE
package main

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// Services that cannot meet a rule, and why. Keys: service name, then rule.
var exceptions = map[string]map[string]string{
	"vllm": {
		// vllm/vllm-openai runs as root and keeps its caches under /root (~/.cache/vllm,
		// ~/.cache/huggingface, ~/.cache/flashinfer, ~/.triton) and /tmp; it has no non-root
		// user, and which paths it writes depends on the model and kernels. Hardening it needs
		// a derived image, which this repository does not build.
		"user":      "image runs as root and writes under /root",
		"read_only": "image writes caches under /root and /tmp at paths that vary by model",
	},
}

// Environment variable names that hold secrets (matched case-insensitively)...
var secretName = regexp.MustCompile(`(?i)(PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|ROUTING_?KEY|CREDENTIAL|WEBHOOK_?URL)`)

// ...unless they only name a file holding the secret.
var fileRef = regexp.MustCompile(`(?i)(_FILE|__FILE|_PATH)$`)

// user:password@ in a URL.
var urlCredentials = regexp.MustCompile(`://[^/@\s]+:[^/@\s]+@`)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: compose-check FILE")
		os.Exit(2)
	}
	project, err := load(os.Args[1], true)
	if err != nil {
		fail(err)
	}
	// The environment as the file writes it, without env_file contents: a developer's local,
	// git-ignored receivers.env is theirs to keep; what is checked is what the repo ships.
	inline, err := load(os.Args[1], false)
	if err != nil {
		fail(err)
	}

	var problems []string
	report := func(name, format string, args ...any) {
		problems = append(problems, name+": "+fmt.Sprintf(format, args...))
	}
	names := make([]string, 0, len(project.Services))
	for name := range project.Services {
		names = append(names, name)
	}
	sort.Strings(names)
	used := map[string]map[string]bool{}
	exempt := func(name, rule string, violated bool) bool {
		reason, ok := exceptions[name][rule]
		if ok {
			if used[name] == nil {
				used[name] = map[string]bool{}
			}
			used[name][rule] = true
			if !violated {
				report(name, "exception for %q (%s) is no longer needed: remove it from compose-check", rule, reason)
			}
		}
		return ok
	}
	for _, name := range names {
		svc := project.Services[name]
		if svc.Image == "" {
			report(name, "no image")
		}
		// Nothing is published beyond loopback.
		for _, p := range svc.Ports {
			if p.Published != "" && p.HostIP != "127.0.0.1" {
				report(name, "port %s published on %q, not 127.0.0.1", p.Published, p.HostIP)
			}
		}
		if v := !svc.ReadOnly; !exempt(name, "read_only", v) && v {
			report(name, "no read_only: true (writable paths belong in volumes or tmpfs)")
		}
		if !hasAll(svc.CapDrop) {
			report(name, "cap_drop does not include ALL")
		}
		if len(svc.CapAdd) > 0 {
			report(name, "cap_add %v", svc.CapAdd)
		}
		if !noNewPrivileges(svc.SecurityOpt) {
			report(name, "security_opt lacks no-new-privileges:true")
		}
		if svc.Privileged {
			report(name, "privileged")
		}
		if svc.NetworkMode == "host" || svc.Pid == "host" {
			report(name, "shares the host's network or pid namespace")
		}
		if v := !nonRoot(svc.User); !exempt(name, "user", v) && v {
			report(name, "user %q: set the image's non-root user explicitly (uid != 0)", svc.User)
		}
		checkEnvironment(project, name, inline.Services[name], report)
		if name == "grafana" {
			checkGrafana(inline.Services[name], report)
		}
		fmt.Printf("%s %s\n", name, svc.Image)
	}
	for name, rules := range exceptions {
		for rule := range rules {
			if !used[name][rule] {
				report(name, "exception for %q names no service in the file: remove it from compose-check", rule)
			}
		}
	}
	if len(problems) > 0 {
		sort.Strings(problems)
		for _, p := range problems {
			fmt.Fprintln(os.Stderr, "compose-check:", p)
		}
		os.Exit(1)
	}
}

func load(file string, resolveEnv bool) (*types.Project, error) {
	fns := []cli.ProjectOptionsFn{
		cli.WithOsEnv,
		cli.WithDotEnv,
		// Every profile, so gpu/vllm services are validated too.
		cli.WithProfiles([]string{"*"}),
	}
	if !resolveEnv {
		fns = append(fns, cli.WithoutEnvironmentResolution)
	}
	opts, err := cli.NewProjectOptions([]string{file}, fns...)
	if err != nil {
		return nil, err
	}
	return opts.LoadProject(context.Background())
}

func checkEnvironment(project *types.Project, name string, svc types.ServiceConfig, report func(string, string, ...any)) {
	mounted := map[string]bool{}
	for _, s := range svc.Secrets {
		target := s.Target
		if target == "" {
			target = s.Source
		}
		if !strings.HasPrefix(target, "/") {
			target = "/run/secrets/" + target
		}
		mounted[target] = true
		// compose can only copy environment- or content-sourced secrets into a writable root
		// filesystem; for a read_only service the secret has to be a file (bind-mounted).
		if def, ok := project.Secrets[s.Source]; ok && def.File == "" && svc.ReadOnly {
			report(name, "secret %q is not from a file: compose cannot inject it into a read_only container", s.Source)
		}
	}
	keys := make([]string, 0, len(svc.Environment))
	for k := range svc.Environment {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := ""
		if p := svc.Environment[k]; p != nil {
			v = *p
		}
		if secretName.MatchString(k) && !fileRef.MatchString(k) {
			report(name, "environment %s looks like a secret: pass it as a file (a compose secret, and a variable naming its /run/secrets path)", k)
		}
		if urlCredentials.MatchString(v) {
			report(name, "environment %s holds a URL with credentials", k)
		}
		if strings.HasPrefix(v, "/run/secrets/") && !mounted[v] {
			report(name, "environment %s names %s, but the service mounts no such secret", k, v)
		}
	}
}

func checkGrafana(svc types.ServiceConfig, report func(string, string, ...any)) {
	env := func(k string) (string, bool) {
		p, ok := svc.Environment[k]
		if !ok || p == nil {
			return "", false
		}
		return *p, true
	}
	// Grafana's default is off today; stating it keeps a future default or an inherited
	// grafana.ini from opening the dashboards to anyone who can reach the port.
	if v, _ := env("GF_AUTH_ANONYMOUS_ENABLED"); v != "false" {
		report("grafana", "GF_AUTH_ANONYMOUS_ENABLED must be \"false\", is %q", v)
	}
	if _, ok := env("GF_SECURITY_ADMIN_PASSWORD__FILE"); !ok {
		report("grafana", "admin password must come from a file (GF_SECURITY_ADMIN_PASSWORD__FILE)")
	}
}

func hasAll(caps []string) bool {
	for _, c := range caps {
		if strings.EqualFold(c, "ALL") {
			return true
		}
	}
	return false
}

func noNewPrivileges(opts []string) bool {
	for _, o := range opts {
		switch strings.ReplaceAll(o, "=", ":") {
		case "no-new-privileges", "no-new-privileges:true":
			return true
		}
	}
	return false
}

// nonRoot: an explicit user whose uid part is neither empty, 0 nor root.
func nonRoot(user string) bool {
	uid, _, _ := strings.Cut(user, ":")
	return uid != "" && uid != "0" && uid != "root"
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "compose-check:", err)
	os.Exit(1)
}
