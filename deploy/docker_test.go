package deploy

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The Dockerfile copies only some folders into the build: they must hold
// every package of the module that the product binary is built from.
func TestDockerfile_CopiesEveryPackageTheBinaryNeeds(t *testing.T) {
	data, err := os.ReadFile("docker/Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var copied []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 3 && f[0] == "COPY" && !strings.HasPrefix(f[1], "--") {
			copied = append(copied, strings.TrimSuffix(f[1], "/"))
		}
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}", "./cmd/meshingest")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	root, _ := filepath.Abs("..")
	for _, dir := range strings.Fields(string(out)) {
		rel, _ := filepath.Rel(root, dir)
		ok := false
		for _, c := range copied {
			if rel == c || strings.HasPrefix(rel, c+"/") {
				ok = true
			}
		}
		if !ok {
			t.Errorf("the Dockerfile copies %q but not %s, which cmd/meshingest imports", copied, rel)
		}
	}
}

type composeService struct {
	Image       string            `yaml:"image"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	User        string            `yaml:"user"`
	Volumes     []string          `yaml:"volumes"`
	Environment map[string]string `yaml:"environment"`
	Profiles    []string          `yaml:"profiles"`
}

// The compose file's contract: the receiver and the writer share the spool,
// the writer and CoreScope's server share the database and the stats file,
// all on one data folder, as one user, and CoreScope's own ingestor does
// not run.
func TestCompose_ServicesShareOneDataFolder(t *testing.T) {
	data, err := os.ReadFile("docker/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]composeService `yaml:"services"`
	}
	if err := yaml.Unmarshal(data, &compose); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	rcv, wr, cs := compose.Services["meshingest-receiver"], compose.Services["meshingest-writer"], compose.Services["corescope"]
	if len(rcv.Command) == 0 || rcv.Command[0] != "receive" || len(wr.Command) == 0 || wr.Command[0] != "write" {
		t.Fatalf("receiver command %q, writer command %q", rcv.Command, wr.Command)
	}
	if !strings.Contains(cs.Image, "corescope") {
		t.Errorf("corescope image %q", cs.Image)
	}
	// The image's entrypoint starts supervisord with CoreScope's ingestor:
	// a second writer of the database. Only the server may run.
	if len(cs.Entrypoint) == 0 || cs.Entrypoint[0] != "/app/corescope-server" {
		t.Errorf("corescope entrypoint %q, want the server alone", cs.Entrypoint)
	}
	for name, s := range map[string]composeService{"receiver": rcv, "writer": wr, "corescope": cs} {
		if len(s.Volumes) != 1 || s.Volumes[0] != rcv.Volumes[0] || !strings.HasSuffix(s.Volumes[0], ":/app/data") {
			t.Errorf("%s volumes %q, want the one data folder at /app/data", name, s.Volumes)
		}
		if s.User != rcv.User || s.User == "" {
			t.Errorf("%s user %q, receiver %q: one user owns the data folder", name, s.User, rcv.User)
		}
		if db := s.Environment["DB_PATH"]; db != "/app/data/meshcore.db" {
			t.Errorf("%s DB_PATH %q", name, db)
		}
	}
	if a, b := rcv.Environment["MESHINGEST_SPOOL_DIR"], wr.Environment["MESHINGEST_SPOOL_DIR"]; a == "" || a != b || !strings.HasPrefix(a, "/app/data/") {
		t.Errorf("spool: receiver %q, writer %q, want one folder in /app/data", a, b)
	}
	if a, b := wr.Environment["CORESCOPE_INGESTOR_STATS"], cs.Environment["CORESCOPE_INGESTOR_STATS"]; a == "" || a != b || !strings.HasPrefix(a, "/app/data/") {
		t.Errorf("stats file: writer %q, corescope %q, want one file in /app/data", a, b)
	}
	// Compose's own reading of the file (schema, anchors, profiles), where
	// a compose tool is installed; it pulls and starts nothing.
	if _, err := exec.LookPath("docker-compose"); err == nil {
		cmd := exec.Command("docker-compose", "-f", "docker/compose.yaml", "--profile", "broker", "config", "-q")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("docker-compose config: %v\n%s", err, out)
		}
	}
}

// dockerReady says whether a Docker engine answers here.
func dockerReady() bool {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return exec.CommandContext(ctx, "docker", "info").Run() == nil
}

// Builds the image from deploy/docker/Dockerfile and runs the demo in it.
// No image registry is reachable here, so the build stage's Go image is
// made from this machine's Go toolchain and a static busybox (docker
// import) and passed as GO_IMAGE; the modules come from the Go module
// proxy (--network host). The final stage is the real one: the static
// binary on an empty base, run as user 1000 with no network.
func TestDockerfile_Image_RunsTheDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a container image (minutes)")
	}
	if !dockerReady() {
		t.Skip("no Docker engine answers (docker info); .ci/run starts one where docker.io installs")
	}
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("busybox (apt-get install busybox-static) is needed for the build stage's shell")
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatal(err)
	}
	docker := func(stdin []byte, args ...string) string {
		t.Helper()
		cmd := exec.Command("docker", args...)
		cmd.Stdin = bytes.NewReader(stdin)
		// The classic builder: BuildKit needs the buildx plugin, which
		// Debian's docker.io does not always bring.
		cmd.Env = append(os.Environ(), "DOCKER_BUILDKIT=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("docker %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	tag := "meshingest-test-" + strings.ToLower(filepath.Base(t.TempDir()))
	goImage, image := tag+"-go:local", tag+":local"
	t.Cleanup(func() {
		exec.Command("docker", "rmi", "-f", image, goImage).Run()
		// The build stage's image (800 MB) is left untagged by the classic builder.
		exec.Command("docker", "image", "prune", "-f", "--filter", "label=org.meshingest.stage=build").Run()
	})

	// The build stage's image: the Go toolchain, a shell, CA certificates.
	stage := t.TempDir()
	for _, d := range []string{"bin", "etc/ssl/certs", "tmp", "root"} {
		os.MkdirAll(filepath.Join(stage, d), 0o755)
	}
	os.Chmod(filepath.Join(stage, "tmp"), 0o1777)
	if out, err := exec.Command("cp", busybox, filepath.Join(stage, "bin/busybox")).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	for _, applet := range []string{"sh", "mkdir", "cp", "echo", "chmod"} {
		os.Symlink("busybox", filepath.Join(stage, "bin", applet))
	}
	if out, err := exec.Command("cp", "/etc/ssl/certs/ca-certificates.crt", filepath.Join(stage, "etc/ssl/certs/")).CombinedOutput(); err != nil {
		t.Skipf("no CA certificates to give the build stage: %v %s", err, out)
	}
	gr := strings.TrimSpace(string(goroot))
	tarball, err := exec.Command("tar", "-cf", "-", "-C", stage, ".", "-C", filepath.Dir(gr), "--transform", "s,^"+filepath.Base(gr)+",usr/local/go,", filepath.Base(gr)).Output()
	if err != nil {
		t.Fatalf("tar: %v", err)
	}
	docker(tarball, "import", "--change", "ENV PATH=/usr/local/go/bin:/bin", "--change", "ENV HOME=/root",
		"--change", "ENV GOTOOLCHAIN=local", "-", goImage)

	start := time.Now()
	docker(nil, "build", "--network", "host", "-f", "docker/Dockerfile", "--build-arg", "GO_IMAGE="+goImage,
		"--build-arg", "VERSION=9.9.9", "--build-arg", "COMMIT=0123456789abcdef", "--build-arg", "DATE=2026-12-02T00:00:00Z",
		"-t", image, "..")
	t.Logf("image built in %s", time.Since(start).Round(time.Second))

	if got := docker(nil, "run", "--rm", "--network", "none", image, "--version"); !strings.HasPrefix(got, "meshingest 9.9.9 commit 0123456789abcdef date 2026-12-02T00:00:00Z linux/amd64") {
		t.Errorf("meshingest --version in the image: %q", got)
	}
	// Read-only but for a /tmp: the binary writes only where it is told.
	demo := docker(nil, "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp:rw,mode=1777", image, "demo", "--dir", "/tmp/demo")
	for _, want := range []string{"transmissions                    498", "observations                     498", "spool depth                      0"} {
		if !strings.Contains(demo, want) {
			t.Errorf("the demo in the image lacks %q:\n%s", want, demo)
		}
	}
	if user := strings.TrimSpace(docker(nil, "image", "inspect", "-f", "{{.Config.User}}", image)); user != "1000:1000" {
		t.Errorf("the image runs as %q, want 1000:1000 (not root)", user)
	}
}
