package gowa_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gowa-dev/gowa/adapters/webhook"
)

// The README's webhook receivers (Go, Node, Python) are run as written
// against deliveries signed by the gateway's own signer: each must accept a
// fresh one and refuse a stale, a tampered and a wrongly keyed one.

// harnesses wrap each snippet in a program that reads CASES, then
// SECRET_i, HEADER_i and BODY_i from the environment, and prints ok or
// refused for each case, one a line (one process: interpreters start
// slowly).
var harnesses = map[string]struct {
	file, tool string
	args       func(path string) []string
	wrap       func(snippet string) string
}{
	"go": {"main.go", "go", func(p string) []string { return []string{"run", p} }, func(s string) string {
		imports, rest, _ := strings.Cut(s, "\n)\n")
		return "package main\n\n" + imports + "\n\t\"fmt\"\n\t\"os\"\n)\n" + rest + `
func main() {
	n, _ := strconv.Atoi(os.Getenv("CASES"))
	for i := range n {
		k := strconv.Itoa(i)
		if verifyGowa(os.Getenv("SECRET_"+k), os.Getenv("HEADER_"+k), []byte(os.Getenv("BODY_"+k)), time.Now()) {
			fmt.Println("ok")
		} else {
			fmt.Println("refused")
		}
	}
}
`
	}},
	"node": {"verify.js", "node", func(p string) []string { return []string{p} }, func(s string) string {
		return s + `
const e = process.env;
for (let i = 0; i < Number(e.CASES); i++) {
  console.log(verifyGowa(e["SECRET_" + i], e["HEADER_" + i], Buffer.from(e["BODY_" + i])) ? "ok" : "refused");
}
`
	}},
	"python": {"verify.py", "python3", func(p string) []string { return []string{p} }, func(s string) string {
		return s + `

import os
e = os.environ
for i in range(int(e["CASES"])):
    print("ok" if verify_gowa(e[f"SECRET_{i}"].encode(), e[f"HEADER_{i}"], e[f"BODY_{i}"].encode()) else "refused")
`
	}},
}

func TestREADMEWebhookReceivers(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	const secret = "0123456789abcdef-readme"
	body := `{"id":7,"type":"message.received","device_id":"d","time":"2026-12-01T10:00:00Z","data":{"text":"héllo"}}`
	now := time.Now()
	cases := []struct {
		name, secret, header, body, want string
	}{
		{"fresh", secret, webhook.Sign(secret, now.Unix(), []byte(body)), body, "ok"},
		{"stale", secret, webhook.Sign(secret, now.Add(-10*time.Minute).Unix(), []byte(body)), body, "refused"},
		{"tampered", secret, webhook.Sign(secret, now.Unix(), []byte(body)), strings.Replace(body, "héllo", "hello", 1), "refused"},
		{"wrong secret", "another-secret-0123", webhook.Sign(secret, now.Unix(), []byte(body)), body, "refused"},
		{"no signature", secret, "t=" + strconv.FormatInt(now.Unix(), 10), body, "refused"},
	}
	for lang, h := range harnesses {
		t.Run(lang, func(t *testing.T) {
			t.Parallel()
			re := regexp.MustCompile("(?s)<!-- webhook-verify:" + lang + " -->\n```[a-z]+\n(.*?)```")
			m := re.FindSubmatch(readme)
			if m == nil {
				t.Fatalf("README has no %s receiver marked webhook-verify:%s", lang, lang)
			}
			if _, err := exec.LookPath(h.tool); err != nil {
				if os.Getenv("CI") == "" {
					t.Skipf("%s is not installed (CI installs it)", h.tool)
				}
				t.Fatalf("%s is not installed", h.tool)
			}
			path := filepath.Join(t.TempDir(), h.file)
			if err := os.WriteFile(path, []byte(h.wrap(string(m[1]))), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(h.tool, h.args(path)...)
			cmd.Env = append(os.Environ(), "CASES="+strconv.Itoa(len(cases)))
			for i, c := range cases {
				k := strconv.Itoa(i)
				cmd.Env = append(cmd.Env, "SECRET_"+k+"="+c.secret, "HEADER_"+k+"="+c.header, "BODY_"+k+"="+c.body)
			}
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", lang, err, out)
			}
			got := strings.Split(strings.TrimSpace(string(out)), "\n")
			if len(got) != len(cases) {
				t.Fatalf("%s printed %q for %d cases", lang, out, len(cases))
			}
			for i, c := range cases {
				if got[i] != c.want {
					t.Errorf("%s: %s said %s, want %s", c.name, lang, got[i], c.want)
				}
			}
		})
	}
}
