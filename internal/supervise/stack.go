package supervise

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/meshingest/meshingest/internal/broker"
	"github.com/meshingest/meshingest/shared"
)

// EmbeddedSourceName is the name of the source the receiver gets for the
// embedded broker, as it appears in stats files and CoreScope's MQTT page.
const EmbeddedSourceName = "embedded"

// EmbeddedClientID is the MQTT client id of the receiver on the embedded
// broker; fixed, so its QoS 1 session survives a receiver restart.
const EmbeddedClientID = "meshingest-run-receiver"

// RunConfigName is the configuration file Stack writes beside the database
// when it adds the embedded broker as a source. It holds the broker's
// password when one is configured, so it is written 0600.
const RunConfigName = "meshingest-run.json"

// supervisorOnlyEnv are variables meant for the supervising process only: a
// child inheriting them would speak to systemd (or take sockets) in its
// parent's name.
var supervisorOnlyEnv = []string{"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"}

// StackOptions configure NewStack.
type StackOptions struct {
	// ConfigPath is the operator's configuration file; "" means none
	// (environment and defaults only).
	ConfigPath string
	// Executable is the meshingest binary run as `receive` and `write`;
	// "" means this process's own executable.
	Executable string
	// Env is the children's base environment; nil means this process's.
	Env            []string
	Stdout, Stderr io.Writer
	Log            zerolog.Logger
	Supervise      Options
}

// Stack is the receiver and the writer as supervised children, plus the
// embedded broker when the configuration names no broker (or asks for one
// with broker.listen).
type Stack struct {
	// Config is the configuration the children run with.
	Config *shared.Config
	// ChildConfig is the path of the file they are given with --config.
	ChildConfig string
	// Broker is the embedded broker, nil when the configuration's own
	// brokers are used.
	Broker *broker.Broker
	sup    *Supervisor
	log    zerolog.Logger
	// configPath and brokerCfg are the operator's file and the embedded
	// broker's settings at start, for Reload.
	configPath string
	brokerCfg  shared.EmbeddedBroker
}

// NewStack loads the configuration, starts the embedded broker if it is
// needed and writes the configuration the children will read. Run starts
// the children.
func NewStack(opts StackOptions) (*Stack, error) {
	cfg, err := shared.LoadConfig(opts.ConfigPath)
	if err != nil {
		return nil, err
	}
	exe := opts.Executable
	if exe == "" {
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("run: find own executable to start the receiver and writer: %w", err)
		}
	}
	env := opts.Env
	if env == nil {
		env = os.Environ()
	}
	env = Environ(env, supervisorOnlyEnv...)

	st := &Stack{Config: cfg, ChildConfig: opts.ConfigPath, log: opts.Log, configPath: opts.ConfigPath, brokerCfg: cfg.Broker}
	if len(cfg.MQTTSources) == 0 || cfg.Broker.Listen != "" {
		b, err := broker.Start(broker.FromConfig(cfg.Broker, opts.Log))
		if err != nil {
			return nil, err
		}
		st.Broker = b
		path, childCfg, err := writeRunConfig(opts.ConfigPath, cfg, b, cfg.Broker)
		if err != nil {
			b.Close()
			return nil, err
		}
		st.Config, st.ChildConfig = childCfg, path
		// The run configuration already holds any MQTT_BROKER source; in the
		// environment it would replace the embedded one.
		env = Environ(env, "MQTT_BROKER", "MQTT_TOPIC")
	}

	var args []string
	if st.ChildConfig != "" {
		args = []string{"--config", st.ChildConfig}
	}
	procs := []Process{
		{Name: "receiver", Path: exe, Args: append([]string{"receive"}, args...), Env: env, Stdout: opts.Stdout, Stderr: opts.Stderr},
		{Name: "writer", Path: exe, Args: append([]string{"write"}, args...), Env: env, Stdout: opts.Stdout, Stderr: opts.Stderr},
	}
	sup := opts.Supervise
	sup.Log = opts.Log
	st.sup = New(procs, sup)
	return st, nil
}

// Run supervises the receiver and the writer until ctx ends, stops them,
// then stops the embedded broker: last, so the receiver is not left
// reconnecting to it while it commits.
func (s *Stack) Run(ctx context.Context) {
	s.sup.Run(ctx)
	s.Close()
}

// Reload rereads the operator's configuration and passes SIGHUP to the
// children (the receiver reloads its sources; the writer ignores it). With
// the embedded broker, the children's run configuration is rewritten first,
// so that the receiver sees the operator's edits; the broker itself keeps
// its address and credentials until the next start.
func (s *Stack) Reload() error {
	if s.Broker != nil {
		cfg, err := shared.LoadConfig(s.configPath)
		if err != nil {
			return fmt.Errorf("reload: %w; the children keep the running configuration", err)
		}
		if cfg.Broker != s.brokerCfg {
			s.log.Warn().Msg("reload: broker settings changed; the embedded broker applies them at the next start")
		}
		_, childCfg, err := writeRunConfig(s.configPath, cfg, s.Broker, s.brokerCfg)
		if err != nil {
			return fmt.Errorf("reload: %w", err)
		}
		s.Config = childCfg
	}
	s.sup.Signal(syscall.SIGHUP)
	return nil
}

// Supervisor gives access to the children's status and to signals.
func (s *Stack) Supervisor() *Supervisor { return s.sup }

// Close stops the embedded broker; for a Stack that will not Run.
func (s *Stack) Close() {
	if s.Broker != nil {
		s.Broker.Close()
	}
}

// writeRunConfig writes the operator's configuration with the embedded
// broker (running with creds) added to mqttSources, beside the database,
// and returns its path and the configuration the children will load from
// it. Every other key is copied as it is, CoreScope's included.
func writeRunConfig(origPath string, cfg *shared.Config, b *broker.Broker, creds shared.EmbeddedBroker) (string, *shared.Config, error) {
	doc := map[string]json.RawMessage{}
	if origPath != "" {
		data, err := os.ReadFile(origPath)
		if err != nil {
			return "", nil, fmt.Errorf("run: read %s: %w", origPath, err)
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			return "", nil, fmt.Errorf("run: %s: %w", origPath, err)
		}
	}
	// The sources as the parent resolved them (legacy `mqtt`, MQTT_BROKER),
	// plus the embedded broker.
	sources := append([]shared.Source{}, cfg.MQTTSources...)
	embedded := shared.Source{
		Name:   EmbeddedSourceName,
		Broker: b.URL(),
		Topics: []string{shared.DefaultTopic},
		// QoS 1 with a fixed client id: the embedded broker holds what
		// observers publish at QoS 1 while the receiver restarts.
		QoS:      1,
		ClientID: EmbeddedClientID,
	}
	if b.RequiresAuth() {
		embedded.Username, embedded.Password = creds.Username, creds.Password
	}
	sources = append(sources, embedded)
	raw, err := json.Marshal(sources)
	if err != nil {
		return "", nil, err
	}
	doc["mqttSources"] = raw
	delete(doc, "mqtt")
	data, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", nil, err
	}

	dir := filepath.Dir(cfg.DBPath)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", nil, fmt.Errorf("run: create the data folder %s: %w", dir, err)
	}
	path := filepath.Join(dir, RunConfigName)
	if err := shared.WriteFileAtomic(path, append(data, '\n')); err != nil {
		return "", nil, fmt.Errorf("run: %w", err)
	}
	child := *cfg
	child.MQTT = nil
	child.MQTTSources = sources
	if err := child.Validate(path); err != nil {
		return "", nil, fmt.Errorf("run: the configuration written for the children is invalid: %w", err)
	}
	return path, &child, nil
}
