package wallaroo

import (
	"fmt"
	"io"
	"strings"
	"sync"
)

// logger writes one-line messages prefixed with the program and instance,
// like the Python SDK: "wallaroo-sdk[program/instance]: message".
type logger struct {
	mu     sync.Mutex
	w      io.Writer
	prefix string
}

var lineBreaks = strings.NewReplacer("\r", `\r`, "\n", `\n`)

func newLogger(w io.Writer) *logger {
	return &logger{w: w, prefix: "wallaroo-sdk[?/?]: "}
}

func (l *logger) setIdentity(program, instance string) {
	l.mu.Lock()
	l.prefix = "wallaroo-sdk[" + program + "/" + instance + "]: "
	l.mu.Unlock()
}

// logf writes one line; errors are ignored (a closed stderr must never
// take the runner down).
func (l *logger) logf(format string, args ...any) {
	msg := lineBreaks.Replace(fmt.Sprintf(format, args...))
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = io.WriteString(l.w, l.prefix+msg+"\n")
}
