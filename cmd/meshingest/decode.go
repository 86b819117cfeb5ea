package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshingest/meshingest/decoder"
	"github.com/meshingest/meshingest/shared"
)

const decodeUsage = `usage: meshingest decode [--config FILE] HEX...
       meshingest decode [--config FILE] --stdin

Decodes MeshCore frames by the firmware's rules and prints one JSON object
per frame: the fields of the test corpus (raw, valid, error_code, error,
content_hash, route_type, …, payload, payload_error_code) plus decoded_json,
the object the writer would store (null for a frame the firmware drops).
Channel keys (channelKeys, hashChannels, channelKeysPath) and hashRegions
come from the config file the writer reads.

Exit status: 0 when every frame is valid, 1 when one is not, 2 on a usage
or configuration error.

flags:
`

func runDecode(args []string) int {
	return decodeCommand(args, os.Stdin, os.Stdout, os.Stderr)
}

func decodeCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("decode", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), decodeUsage); fs.PrintDefaults() }
	configPath := fs.String("config", "", "CoreScope config.json `FILE` with the channel keys")
	useStdin := fs.Bool("stdin", false, "read frames from standard input, one hex frame per line")

	// Flags may come before or after the frames.
	var frames []string
	for {
		if status, ok := parseFlags(fs, args); !ok {
			return status
		}
		if fs.NArg() == 0 {
			break
		}
		frames = append(frames, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if *useStdin == (len(frames) > 0) {
		fmt.Fprintln(stderr, "meshingest decode: give frames as arguments or --stdin, not both and not neither")
		fs.Usage()
		return 2
	}
	opts, err := decodeOptions(*configPath)
	if err != nil {
		fmt.Fprintln(stderr, "meshingest decode:", err)
		return 2
	}

	out := bufio.NewWriter(stdout)
	defer out.Flush()
	status := 0
	n := 0
	emit := func(raw string) {
		n++
		line, valid := decoder.Describe(raw, opts)
		out.Write(line)
		out.WriteByte('\n')
		if !valid {
			status = 1
			_, err := decoder.DecodeFrame(raw)
			fmt.Fprintf(stderr, "meshingest decode: frame %d: %v\n", n, err)
		}
	}
	if !*useStdin {
		for _, raw := range frames {
			emit(raw)
		}
		return status
	}
	sc := bufio.NewScanner(stdin)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		emit(line)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintf(stderr, "meshingest decode: standard input after frame %d: %v\n", n, err)
		return 1
	}
	return status
}

// decodeOptions builds the key ring and regions the writer would use from
// the config file: channelKeys, hashChannels and the channelKeysPath file
// (env CHANNEL_KEYS_PATH overrides it; by default channel-rainbow.json
// beside the config, when there is one, as in CoreScope).
func decodeOptions(configPath string) (decoder.Options, error) {
	if configPath == "" {
		ring, err := decoder.NewKeyRing(decoder.KeyRingConfig{})
		return decoder.Options{Keys: ring, VerifySignatures: true}, err
	}
	cfg, err := shared.LoadConfig(configPath)
	if err != nil {
		return decoder.Options{}, err
	}
	keysPath := os.Getenv("CHANNEL_KEYS_PATH")
	if keysPath == "" {
		keysPath = cfg.ChannelKeysPath
	}
	explicit := keysPath != ""
	if !explicit {
		keysPath = filepath.Join(filepath.Dir(configPath), "channel-rainbow.json")
	}
	var rainbow []byte
	if data, err := os.ReadFile(keysPath); err == nil {
		rainbow = data
	} else if explicit {
		return decoder.Options{}, fmt.Errorf("channel keys file %s (channelKeysPath): %v", keysPath, err)
	}
	ring, err := decoder.NewKeyRing(decoder.KeyRingConfig{
		ChannelKeys:  cfg.ChannelKeys,
		HashChannels: cfg.HashChannels,
		Rainbow:      rainbow,
	})
	if err != nil {
		return decoder.Options{}, fmt.Errorf("config %s: %v", configPath, err)
	}
	return decoder.Options{
		Keys:             ring,
		Regions:          decoder.NewRegionSet(cfg.HashRegions),
		VerifySignatures: cfg.ShouldValidateSignatures(),
	}, nil
}
