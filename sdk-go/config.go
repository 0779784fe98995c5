package wallaroo

import (
	"fmt"
	"strconv"
	"strings"
)

// defaultMaxMessageBytes is the engine's default limits.message_max_bytes.
const defaultMaxMessageBytes = 16 * 1024 * 1024

// config is what the engine tells a runner through its environment
// (protocol/README.md, section 2).
type config struct {
	engineAddr      string
	token           string
	program         string
	instance        uint32
	maxMessageBytes int
}

// configFromEnv reads the WALLAROO_* variables. The error wraps
// ErrBadEnvironment and names every variable that is missing or invalid.
func configFromEnv(lookup func(string) (string, bool)) (config, error) {
	get := func(name string) string {
		v, _ := lookup(name)
		return v
	}
	var missing []string
	for _, name := range []string{"WALLAROO_ENGINE_ADDR", "WALLAROO_TOKEN", "WALLAROO_PROGRAM", "WALLAROO_INSTANCE"} {
		if get(name) == "" {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		plural := ""
		if len(missing) > 1 {
			plural = "s"
		}
		return config{}, fmt.Errorf("%w: missing environment variable%s %s: this program is meant to be started by wallaroo-engine",
			ErrBadEnvironment, plural, strings.Join(missing, ", "))
	}
	var problems []string
	instance, err := strconv.ParseUint(get("WALLAROO_INSTANCE"), 10, 32)
	if err != nil {
		problems = append(problems, fmt.Sprintf("WALLAROO_INSTANCE=%q is not an integer >= 0", get("WALLAROO_INSTANCE")))
	}
	maxBytes := defaultMaxMessageBytes
	if text := get("WALLAROO_MAX_MESSAGE_BYTES"); text != "" {
		v, err := strconv.ParseUint(text, 10, 31)
		if err != nil || v < 1 {
			problems = append(problems, fmt.Sprintf("WALLAROO_MAX_MESSAGE_BYTES=%q is not an integer from 1 to 2147483647", text))
		}
		maxBytes = int(v)
	}
	if len(problems) > 0 {
		return config{}, fmt.Errorf("%w: %s", ErrBadEnvironment, strings.Join(problems, "; "))
	}
	return config{
		engineAddr:      get("WALLAROO_ENGINE_ADDR"),
		token:           get("WALLAROO_TOKEN"),
		program:         get("WALLAROO_PROGRAM"),
		instance:        uint32(instance),
		maxMessageBytes: maxBytes,
	}, nil
}
