// Command file_source_go is a source connector that reads files, one stream
// per file: the Go twin of connectors/file_source/file_source.py, with the
// same command line and the same behaviour.
//
//	file_source_go [--framing line|length] [--name NAME]... FILE...
//	file_source_go --connect ADDRESS --token-env VAR [...] FILE...
//
// Each FILE is one stream, named after the path as given (or after the
// matching --name). Each record is an event: a line without its "\n" (and
// a "\r" before it), or with --framing length a big-endian 32-bit length
// then that many bytes, as the engine's built-in file source reads them. A
// record's message id is its position in the file, from 1, so the ids are
// stable across restarts and the engine's resumeAfter says where to start
// again. At the end of a file the stream ends; once every stream has ended
// the connector says Goodbye and exits 0 (a bounded source).
//
// Started by the engine (program: in the topology) it reads its connection
// from the environment. With --connect it dials an engine that declares
// listen: ADDRESS and token_env: VAR, reading the token from its own
// environment variable VAR (never from the command line, which other users
// can see).
//
// README.md walks through this file.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wallaroo-engine/wallaroo/sdk-go"
)

// programName prefixes the connector's own log lines and is its Hello's
// program when it dials in (--connect).
const programName = "file_source_go"

// warn writes one line on stderr (the engine keeps it in its log).
func warn(msg string) { fmt.Fprintf(os.Stderr, "%s: %s\n", programName, msg) }

// recordReader reads one file record by record and numbers the records
// from 1. Nothing in it is Wallaroo-specific.
type recordReader struct {
	path    string
	framing string // "line" or "length"
	file    *os.File
	in      *bufio.Reader
	nextID  uint64       // the id of the record read returns next
	warn    func(string) // where a truncated last frame is reported
}

func openRecords(path, framing string, warn func(string)) (*recordReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	return &recordReader{path: path, framing: framing, file: f, in: bufio.NewReaderSize(f, 64<<10), nextID: 1, warn: warn}, nil
}

// read returns the next record, a new slice each time (the SDK keeps it
// until the engine acknowledges it), and ok false at the end of the file.
func (r *recordReader) read() (record []byte, ok bool, err error) {
	if r.file == nil {
		return nil, false, nil
	}
	if r.framing == "length" {
		record, ok, err = r.readFrame()
	} else {
		record, ok, err = r.readLine()
	}
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", r.path, err)
	}
	if !ok {
		r.close()
	}
	return record, ok, nil
}

func (r *recordReader) readLine() ([]byte, bool, error) {
	line, err := r.in.ReadBytes('\n')
	if err != nil && err != io.EOF {
		return nil, false, err
	}
	if len(line) == 0 {
		return nil, false, nil
	}
	// A last line without "\n" is still a line.
	if rest, found := bytes.CutSuffix(line, []byte("\n")); found {
		line, _ = bytes.CutSuffix(rest, []byte("\r"))
	}
	return line, true, nil
}

func (r *recordReader) readFrame() ([]byte, bool, error) {
	var head [4]byte
	n, err := io.ReadFull(r.in, head[:])
	switch {
	case err == io.EOF:
		return nil, false, nil
	case err == io.ErrUnexpectedEOF:
		r.warn(fmt.Sprintf("%s: the file ends inside a frame (%d bytes ignored)", r.path, n))
		return nil, false, nil
	case err != nil:
		return nil, false, err
	}
	size := binary.BigEndian.Uint32(head[:])
	// Read through a limit rather than allocating size bytes up front: a
	// truncated or corrupt file must not cost 4 GiB.
	body, err := io.ReadAll(io.LimitReader(r.in, int64(size)))
	if err != nil {
		return nil, false, err
	}
	if uint32(len(body)) < size {
		r.warn(fmt.Sprintf("%s: the file ends inside a frame (%d bytes ignored)", r.path, len(head)+len(body)))
		return nil, false, nil
	}
	return body, true, nil
}

// skip reads past the first count records (the engine has them).
func (r *recordReader) skip(count uint64) error {
	for r.nextID <= count {
		_, ok, err := r.read()
		if err != nil {
			return err
		}
		if !ok {
			break
		}
		r.nextID++
	}
	r.nextID = count + 1
	return nil
}

func (r *recordReader) close() {
	if r.file != nil {
		r.file.Close() // read-only: nothing to lose
		r.file, r.in = nil, nil
	}
}

// file is one stream: its name and the path it reads.
type file struct {
	name, path string
}

// fileSource is the wallaroo.Source: one stream per file, message id =
// record number.
type fileSource struct {
	files   []file // in the order to read them
	framing string
	readers map[string]*recordReader
	ended   map[string]bool
	warn    func(string)
}

func newFileSource(files []file, framing string) *fileSource {
	return &fileSource{files: files, framing: framing, readers: map[string]*recordReader{},
		ended: map[string]bool{}, warn: warn}
}

// Streams declares one stream per file. No resume hint: a file keeps no
// acknowledged offset of its own, and the engine remembers how far it got.
func (s *fileSource) Streams(ctx context.Context) ([]wallaroo.StreamSpec, error) {
	specs := make([]wallaroo.StreamSpec, len(s.files))
	for i, f := range s.files {
		specs[i] = wallaroo.StreamSpec{Name: f.name}
	}
	return specs, nil
}

// Open starts a stream after the records the engine already has.
func (s *fileSource) Open(ctx context.Context, stream string, resumeAfter uint64) error {
	i := slices.IndexFunc(s.files, func(f file) bool { return f.name == stream })
	if i < 0 {
		return fmt.Errorf("no file for stream %q", stream)
	}
	r, err := openRecords(s.files[i].path, s.framing, s.warn)
	if err != nil {
		return err
	}
	if err := r.skip(resumeAfter); err != nil {
		r.close()
		return err
	}
	s.readers[stream] = r
	return nil
}

// Poll reads what the credits allow, file after file, and ends each stream
// at the end of its file. A file never makes us wait.
func (s *fileSource) Poll(ctx context.Context, max int) ([]wallaroo.SourceItem, error) {
	var items []wallaroo.SourceItem
	messages := 0
	now := time.Now().UnixMicro() // the event time: when the record was read
	for _, f := range s.files {
		r := s.readers[f.name]
		if r == nil || s.ended[f.name] {
			continue
		}
		for messages < max {
			record, ok, err := r.read()
			if err != nil {
				return nil, err
			}
			if !ok {
				items = append(items, wallaroo.EndOfStream(f.name))
				s.ended[f.name] = true
				break
			}
			items = append(items, wallaroo.SourceItem{Stream: f.name, ID: r.nextID, Payload: record, EventTime: now})
			r.nextID++
			messages++
		}
		if messages >= max {
			break
		}
	}
	return items, nil
}

// Acked has nothing to do: a file is not consumed, and the engine's
// position is all a restarted file_source_go needs.
func (s *fileSource) Acked(ctx context.Context, stream string, upTo uint64) error { return nil }

func (s *fileSource) Close(ctx context.Context) error {
	for _, r := range s.readers {
		r.close()
	}
	return nil
}

// config is what the command line asks for.
type config struct {
	framing  string
	files    []file
	connect  string // the engine's listen: address, or "" when spawned
	tokenEnv string // with connect: the variable holding the token
}

const usage = "usage: file_source_go [-h] [--framing {line,length}] [--name NAME] [--connect ADDRESS]\n" +
	"                      [--token-env VAR] FILE [FILE ...]"

const help = usage + `

A Wallaroo source connector: one stream per file, one event per record.

positional arguments:
  FILE                  a file to read

options:
  -h, --help            show this help message and exit
  --framing {line,length}
                        line: one event per line; length: a big-endian u32 length, then the bytes
  --name NAME           the stream name of the matching FILE (default: the path as given); give one per FILE
  --connect ADDRESS     dial an engine that listens here
  --token-env VAR       with --connect: the variable holding the token
`

// errHelp is parseArgs's answer to -h or --help.
var errHelp = errors.New("help requested")

// longOptions are the options that take a value; --help is the one that
// does not. As with Python's argparse, a unique prefix of a long option is
// that option, options may come before or after the files, and "--" ends
// the options.
var longOptions = []string{"--framing", "--name", "--connect", "--token-env"}

// negativeNumber is what argparse takes for a positional argument even
// though it starts with "-".
var negativeNumber = regexp.MustCompile(`^-\d+$|^-\d*\.\d+$`)

// parseArgs reads the command line (without the program name) as
// file_source.py's argparse does. getenv reads the token variable. The
// error is errHelp or a usage error, for exit status 2.
func parseArgs(args []string, getenv func(string) string) (*config, error) {
	c := &config{framing: "line"}
	var names, paths, unknown []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		if arg == "--" {
			paths = append(paths, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(arg, "-") || arg == "-" || negativeNumber.MatchString(arg) {
			paths = append(paths, arg)
			continue
		}
		if arg == "-h" {
			return nil, errHelp
		}
		name, value, hasValue := strings.Cut(arg, "=")
		option, err := longOption(name)
		if err != nil {
			return nil, err
		}
		switch option {
		case "":
			unknown = append(unknown, arg)
			continue
		case "--help":
			if hasValue {
				return nil, fmt.Errorf("argument -h/--help: ignored explicit argument '%s'", value)
			}
			return nil, errHelp
		}
		if !hasValue {
			if i+1 == len(args) || (strings.HasPrefix(args[i+1], "-") && args[i+1] != "-" && !negativeNumber.MatchString(args[i+1])) {
				return nil, fmt.Errorf("argument %s: expected one argument", option)
			}
			i++
			value = args[i]
		}
		switch option {
		case "--framing":
			if value != "line" && value != "length" {
				return nil, fmt.Errorf("argument --framing: invalid choice: '%s' (choose from 'line', 'length')", value)
			}
			c.framing = value
		case "--name":
			names = append(names, value)
		case "--connect":
			c.connect = value
		case "--token-env":
			c.tokenEnv = value
		}
	}
	if len(paths) == 0 {
		return nil, errors.New("the following arguments are required: FILE")
	}
	if len(unknown) > 0 {
		return nil, fmt.Errorf("unrecognized arguments: %s", strings.Join(unknown, " "))
	}
	if names != nil && len(names) != len(paths) {
		return nil, fmt.Errorf("%d --name for %d files: give one per file", len(names), len(paths))
	}
	if names == nil {
		names = paths
	}
	for i, name := range names {
		if name == "" {
			return nil, errors.New("a stream name cannot be empty")
		}
		if slices.Contains(names[:i], name) {
			return nil, errors.New("two files have the same stream name")
		}
	}
	if (c.connect != "") != (c.tokenEnv != "") {
		return nil, errors.New("--connect and --token-env go together")
	}
	if c.tokenEnv != "" && getenv(c.tokenEnv) == "" {
		return nil, fmt.Errorf("--token-env %s: that variable is not set", c.tokenEnv)
	}
	for i, path := range paths {
		if !readableFile(path) {
			return nil, fmt.Errorf("%s: not a readable file", path)
		}
		c.files = append(c.files, file{name: names[i], path: path})
	}
	return c, nil
}

// longOption returns the option that arg (without "=value") names: itself,
// or the one option it is a prefix of; "" for none.
func longOption(arg string) (string, error) {
	all := append([]string{"--help"}, longOptions...)
	if slices.Contains(all, arg) {
		return arg, nil
	}
	var matches []string
	if strings.HasPrefix(arg, "--") && len(arg) > 2 {
		for _, o := range all {
			if strings.HasPrefix(o, arg) {
				matches = append(matches, o)
			}
		}
	}
	switch len(matches) {
	case 0:
		return "", nil
	case 1:
		return matches[0], nil
	default:
		return "", fmt.Errorf("ambiguous option: %s could match %s", arg, strings.Join(matches, ", "))
	}
}

// readableFile says whether path can be read and is not a directory, as
// file_source.py checks before it starts (access(2), which does not open,
// so a FIFO does not block here).
func readableFile(path string) bool {
	if path == "" || unix.Access(path, unix.R_OK) != nil {
		return false
	}
	info, err := os.Stat(path)
	return err == nil && !info.IsDir()
}

// run is main without os.Exit: it returns the exit status.
func run(args []string) int {
	c, err := parseArgs(args, os.Getenv)
	if errors.Is(err, errHelp) {
		fmt.Print(help)
		return 0
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s\n%s: error: %v\n", usage, programName, err)
		return wallaroo.ExitUsage
	}
	// SIGTERM (and Ctrl-C) stop the source cleanly: the SDK stops polling,
	// waits for the acknowledgements of what it sent, closes the source
	// and says Goodbye. A second signal, with the default handling back,
	// stops the process at once.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		stop()
	}()
	var opts []wallaroo.ConnectorOption
	if c.connect != "" {
		opts = append(opts, wallaroo.WithAddress(c.connect, os.Getenv(c.tokenEnv)), wallaroo.WithProgram(programName))
	}
	err = wallaroo.RunSource(ctx, newFileSource(c.files, c.framing), opts...)
	return wallaroo.ConnectorExitCode(err)
}

func main() {
	os.Exit(run(os.Args[1:]))
}
