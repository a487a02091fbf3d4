package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The deployment files in deploy/ configure gowa through its environment:
// every variable they set must be one gowa reads, with a value it accepts,
// and a pod must be given time to hand its devices over before it is
// killed.

// podEnv is what a Kubernetes manifest or a compose service sets.
type podEnv struct {
	where string
	env   map[string]string
	grace time.Duration // how long the platform waits after SIGTERM
}

func TestDeployFilesConfigureWhatGowaReads(t *testing.T) {
	var pods []podEnv
	pods = append(pods, kubernetesPods(t, "../../deploy/kubernetes")...)
	pods = append(pods, composeServices(t, "../../deploy/compose.yaml")...)
	if len(pods) < 3 {
		t.Fatalf("found %d gowa containers in deploy/, want the Deployment and two compose replicas", len(pods))
	}
	for _, p := range pods {
		t.Run(p.where, func(t *testing.T) {
			for _, k := range os.Environ() {
				if name, _, _ := strings.Cut(k, "="); strings.HasPrefix(name, envPrefix+"_") {
					t.Setenv(name, "")
					os.Unsetenv(name)
				}
			}
			for k, v := range p.env {
				if strings.HasPrefix(k, envPrefix+"_") {
					t.Setenv(k, v)
				}
			}
			cfg, err := loadConfig("rest", nil, io.Discard)
			if err != nil {
				t.Fatalf("gowa refuses this configuration: %v", err)
			}
			var unknown []string
			for k := range p.env {
				if strings.HasPrefix(k, envPrefix+"_") && !knownVariable(k) {
					unknown = append(unknown, k)
				}
			}
			if len(unknown) > 0 {
				t.Errorf("variables gowa does not read: %v", unknown)
			}
			if cfg.DbURI == "" || cfg.AdvertiseURL == "" {
				t.Errorf("not a replica configuration: APP_DB_URI and APP_ADVERTISE_URL must be set")
			}
			// The handoff takes up to a lease (the devices' new holders
			// connect them within it), then the requests in flight finish.
			if need := cfg.LeaseTTL + cfg.ShutdownGrace; p.grace < need {
				t.Errorf("the platform kills the replica %v after SIGTERM; the handoff and shutdown grace need %v", p.grace, need)
			}
		})
	}
}

// knownVariable reports whether gowa reads the variable name: the help
// text names every variable beside its flag.
func knownVariable(name string) bool {
	var help bytes.Buffer
	if _, err := loadConfig("rest", []string{"-h"}, &help); !errors.Is(err, flag.ErrHelp) {
		return false
	}
	return strings.Contains(help.String(), "("+name+")")
}

func kubernetesPods(t *testing.T, dir string) []podEnv {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in %s: %v", dir, err)
	}
	secrets := map[string]map[string]string{}
	type container struct {
		Name string
		Env  []struct {
			Name      string
			Value     string
			ValueFrom struct {
				SecretKeyRef struct{ Name, Key string } `yaml:"secretKeyRef"`
				FieldRef     struct {
					FieldPath string `yaml:"fieldPath"`
				} `yaml:"fieldRef"`
			} `yaml:"valueFrom"`
		}
	}
	type doc struct {
		Kind     string
		Metadata struct{ Name string }
		Data     map[string]string `yaml:"stringData"`
		Spec     struct {
			Template struct {
				Spec struct {
					Grace      int64 `yaml:"terminationGracePeriodSeconds"`
					Containers []container
				}
			}
		}
	}
	var deployments []doc
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(b))
		for {
			var d doc
			if err := dec.Decode(&d); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			switch d.Kind {
			case "Secret":
				secrets[d.Metadata.Name] = d.Data
			case "Deployment":
				deployments = append(deployments, d)
			}
		}
	}
	var pods []podEnv
	for _, d := range deployments {
		for _, c := range d.Spec.Template.Spec.Containers {
			env := map[string]string{}
			for _, e := range c.Env {
				v := e.Value
				if ref := e.ValueFrom.SecretKeyRef; ref.Name != "" {
					s, ok := secrets[ref.Name][ref.Key]
					if !ok {
						t.Errorf("%s: %s reads secret %s key %s, which the manifests do not define", d.Metadata.Name, e.Name, ref.Name, ref.Key)
					}
					v = s
				}
				if e.ValueFrom.FieldRef.FieldPath == "status.podIP" {
					v = "10.1.2.3"
				}
				// Kubernetes expands $(VAR) from the variables listed before.
				for k, val := range env {
					v = strings.ReplaceAll(v, "$("+k+")", val)
				}
				env[e.Name] = v
			}
			grace := time.Duration(d.Spec.Template.Spec.Grace) * time.Second
			if d.Spec.Template.Spec.Grace == 0 {
				grace = 30 * time.Second // Kubernetes' default
			}
			pods = append(pods, podEnv{where: "kubernetes/" + d.Metadata.Name + "/" + c.Name, env: env, grace: grace})
		}
	}
	return pods
}

func composeServices(t *testing.T, file string) []podEnv {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Services map[string]struct {
			Build       any
			Environment map[string]string
			StopGrace   string `yaml:"stop_grace_period"`
		}
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	var pods []podEnv
	for name, s := range f.Services {
		if s.Build == nil {
			continue // postgres, the proxy
		}
		grace := 10 * time.Second // compose's default
		if s.StopGrace != "" {
			if grace, err = time.ParseDuration(s.StopGrace); err != nil {
				t.Fatalf("%s: %s: stop_grace_period: %v", file, name, err)
			}
		}
		pods = append(pods, podEnv{where: "compose/" + name, env: s.Environment, grace: grace})
	}
	return pods
}
